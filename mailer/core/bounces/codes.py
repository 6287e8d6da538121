"""SMTP reply codes (RFC 5321) and enhanced status codes (RFC 3463, 5248) in a remote
server's words: finding them, and what one says on its own."""

from __future__ import annotations

import re

Code = tuple[int, int, int]

_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
_BASIC = re.compile(r"(?<![\w.\-/#=])([245][0-5]\d)(?![\w.]|-\d{3}-)")
_SUBJECTS = {
    0: "other or undefined status",
    1: "addressing status",
    2: "mailbox status",
    3: "mail system status",
    4: "network or routing status",
    5: "mail delivery protocol status",
    6: "message content or media status",
    7: "security or policy status",
}
_DETAILS = {
    (1, 1): "bad destination mailbox address",
    (1, 2): "bad destination system address",
    (1, 3): "bad destination mailbox address syntax",
    (1, 4): "destination mailbox address ambiguous",
    (1, 6): "destination mailbox has moved",
    (1, 7): "bad sender's mailbox address syntax",
    (1, 8): "bad sender's system address",
    (1, 10): "recipient address has null MX",
    (2, 1): "mailbox disabled",
    (2, 2): "mailbox full",
    (2, 3): "message length exceeds administrative limit",
    (3, 1): "mail system full",
    (3, 2): "system not accepting network messages",
    (3, 4): "message too big for system",
    (4, 1): "no answer from host",
    (4, 4): "unable to route",
    (4, 7): "delivery time expired",
    (5, 3): "too many recipients",
    (7, 1): "delivery not authorized, message refused",
    (7, 13): "user account disabled",
    (7, 23): "SPF validation failed",
    (7, 25): "reverse DNS validation failed",
    (7, 26): "multiple authentication checks failed",
    (7, 27): "sender address has null MX",
}
# The address or its domain does not exist (RFC 3463, 7505): 5.1.1, 5.1.2, 5.1.3, 5.1.6,
# 5.1.10, and 5.4.4 (no route to the domain: it has neither MX nor address).
HARD_CODES = frozenset({(1, 1), (1, 2), (1, 3), (1, 6), (1, 10), (4, 4)})


def enhanced(text: str, *, failures_only: bool = False) -> Code | None:
    """The first enhanced status code in `text` (with `failures_only`, the first 4.x.x or
    5.x.x)."""
    for found in _ENHANCED.finditer(text):
        if not failures_only or found[1] != "2":
            return int(found[1]), int(found[2]), int(found[3])
    return None


def basic(text: str) -> int | None:
    """The first three-digit reply code in `text`."""
    found = _BASIC.search(text)
    return int(found[1]) if found else None


def dotted(code: Code | None) -> str | None:
    return ".".join(map(str, code)) if code else None


def describe(code: Code) -> str:
    text = _DETAILS.get(code[1:]) or _SUBJECTS.get(code[1], "unknown status")
    return f"{code[0]}.{code[1]}.{code[2]} {text}"


def is_hard(code: Code) -> bool:
    return code[0] == 5 and code[1:] in HARD_CODES


def is_sender(code: Code) -> bool:
    """X.1.7, X.1.8 and X.7.27: our sender address, not the recipient's, was refused."""
    return code[1:] in ((1, 7), (1, 8), (7, 27))


def is_policy(code: Code) -> bool:
    """Security or policy (X.7.x), or our content (X.6.x): not the recipient's doing. The
    X.7.x codes that speak of the recipient's mailbox (13: disabled; 17, 18: its owner
    changed) are not policy."""
    return (code[1] == 7 and code[2] not in (13, 17, 18)) or code[1] == 6 or is_sender(code)
