"""Why the relay refused a session, as a small fixed set of classes for metrics and alerts:
the reason texts themselves vary with every relay and never make a label."""

from __future__ import annotations

import re
from typing import Literal

FailureClass = Literal["connection", "timeout", "tls", "auth", "sender", "other"]
CLASSES: tuple[FailureClass, ...] = ("connection", "timeout", "tls", "auth", "sender", "other")

_RULES: tuple[tuple[re.Pattern[str], FailureClass], ...] = (
    (re.compile(r"authenticat|\bauth\b|\b53[05]\b", re.I), "auth"),
    (re.compile(r"tls|ssl|certificate|handshake", re.I), "tls"),
    (re.compile(r"tim(ed|e)[ -]?out", re.I), "timeout"),
    (re.compile(r"^\s*[45]\d\d\b"), "sender"),  # a reply to MAIL FROM: our sender refused
    (re.compile(r"connect|unavailable|refused|disconnect|unreachable|reset|closed", re.I),
     "connection"),
)  # fmt: skip


def failure_class(reason: str) -> FailureClass:
    for pattern, name in _RULES:
        if pattern.search(reason):
            return name
    return "other"
