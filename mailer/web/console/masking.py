"""Parked job bodies and headers as an operator may see them: addresses masked."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mailer.core.addresses import mask_addresses

MAX_SHOWN = 256 * 1024
mask_text = mask_addresses


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if isinstance(value, dict):
        return {mask_text(str(k)): _masked(v) for k, v in value.items()}
    return value


def pretty_body(body: bytes) -> str:
    """JSON pretty-printed (attachments' data shortened), else the text; addresses masked."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return mask_text(body[:MAX_SHOWN].decode("utf-8", "replace"))
    if isinstance(value, dict) and isinstance(value.get("attachments"), list):
        for item in value["attachments"]:
            if isinstance(item, dict) and isinstance(item.get("data_base64"), str):
                data = item["data_base64"]
                item["data_base64"] = f"{data[:24]}… ({len(data)} characters)"
    try:
        text = json.dumps(_masked(value), indent=2, ensure_ascii=False)
    except RecursionError:
        return "(nested too deeply to show)"
    return text[:MAX_SHOWN]


def masked_headers(headers: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(mask_text(str(k)), mask_text(_header_text(v))) for k, v in sorted(headers.items())]


def _header_text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)
