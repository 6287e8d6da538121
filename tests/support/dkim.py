"""Reading DKIM-Signature header fields in tests."""

from __future__ import annotations

import re


def signature_tags(signed: bytes, index: int = 0) -> dict[str, str]:
    """The tags of the index-th DKIM-Signature, whitespace removed from their values."""
    headers = signed.split(b"\r\n\r\n", 1)[0].decode()
    unfolded = re.sub(r"\r\n[ \t]+", " ", headers)
    values = [
        line.split(":", 1)[1]
        for line in unfolded.split("\r\n")
        if line.startswith("DKIM-Signature:")
    ]
    tags = [part.strip().split("=", 1) for part in values[index].split(";") if part.strip()]
    return {name.strip(): value.replace(" ", "") for name, value in tags}
