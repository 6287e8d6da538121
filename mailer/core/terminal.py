"""Text from input made safe to show on one line of a terminal or a log: control characters
(an escape sequence, CR, LF, NEL), line and paragraph separators and bidirectional overrides
are shown as escapes instead of acting on the screen or starting a line."""

from __future__ import annotations

import re

# Unicode categories Cc (C0, DEL, C1), Zl and Zp, and the bidirectional marks and overrides.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(found: re.Match[str]) -> str:
    return found.group(0).encode("unicode_escape").decode("ascii")


def one_line(text: str, limit: int | None = None) -> str:
    shown = _UNSAFE.sub(_escape, text)
    if limit is not None and len(shown) > limit:
        return shown[: max(0, limit - 1)] + "…"
    return shown
