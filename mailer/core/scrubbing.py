"""A remote server's words (a relay's reply, a bounce's diagnostic) fit to store, log and
show: no address in them, one line, bounded."""

from __future__ import annotations

import re

# A run of characters that may be (part of) an address, with the <> around it: the runs with
# an @ inside are masked. Matching whole runs keeps it linear; searching for `run@run` from
# every start, as an address pattern does, is quadratic on a long run without an @.
_ADDRESS_RUN = re.compile(r"<?[^\s<>\"'(),;:\[\]]+>?")
_WORD = re.compile(r"\S+")
_QUOTED_LOCAL = re.compile(r'<?"[^"\s]{0,64}"@[^\s<>"\'(),;:\[\]]+>?')  # "a..b"@example.jp
DIAGNOSTIC_CHARS = 500


def scrub(text: str, recipient: str = "", *, limit: int = DIAGNOSTIC_CHARS) -> str:
    """`text` on one line, cut at `limit` characters (only as much of it is read), with every
    address masked: `<recipient>` where it is the recipient's (`recipient`, in any case),
    `<address>` where it is anyone else's."""
    mine = recipient.lower()

    def masked(run: re.Match[str]) -> str:
        core = run[0].strip("<>").replace('"@', "x@")
        if "@" not in core[1:-1]:
            return run[0]
        return "<recipient>" if mine and mine in core.lower() else "<address>"

    kept: list[str] = []
    length = 0
    for word in _WORD.finditer(text):
        said = word[0]
        if '"@' in said:
            said = _QUOTED_LOCAL.sub(masked, said)
        kept.append(_ADDRESS_RUN.sub(masked, said) if "@" in said else said)
        length += len(kept[-1]) + 1
        if length > limit:
            break
    return " ".join(kept)[:limit]
