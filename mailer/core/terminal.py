"""Text from input made safe to show on one line of a terminal: control characters
(an escape sequence, CR, LF), line and paragraph separators and bidirectional overrides are
shown as escapes instead of acting on the screen."""

from __future__ import annotations

import unicodedata

_ALSO = frozenset("\u2028\u2029\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def one_line(text: str, limit: int | None = None) -> str:
    shown = "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in _ALSO
        else ch
        for ch in text
    )
    if limit is not None and len(shown) > limit:
        return shown[: max(0, limit - 1)] + "…"
    return shown
