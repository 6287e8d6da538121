"""Header-injection payloads, and how an RFC 2047 reader shows a display name."""

from __future__ import annotations

import base64
import re
from email.header import decode_header, make_header
from email.utils import parseaddr
from typing import Any

_INJECTED = (
    "\r\nSubject: Security alert\r\nContent-Type: text/html\r\n\r\n"
    "<a href=//attacker.example>Log in</a><!--"
)
# The payload, verbatim, and its variants.
PHISHING_Q = (
    "=?utf-8?q?=0D=0ASubject:_Security_alert=0D=0AContent-Type:_text/html=0D=0A=0D=0A"
    "<a_href=3D//attacker.example>Log_in</a><!--?="
)
PHISHING_B = "=?utf-8?b?" + base64.b64encode(_INJECTED.encode()).decode() + "?="
BCC_Q = "=?utf-8?q?=0D=0ABcc:_victim@attacker.example=0D=0A?="
SEPARATORS = [
    "=?utf-8?q?Jan=E2=80=A8Bcc:_victim@attacker.example?=",  # U+2028, encoded
    "=?utf-8?b?" + base64.b64encode("Jan\x85Bcc: x@attacker.example".encode()).decode() + "?=",
    "=?utf-8?q?Jan=E2=80=A9Bcc:_victim@attacker.example?=",  # U+2029, encoded
]
HOSTILE = [PHISHING_Q, PHISHING_B, BCC_Q, *SEPARATORS]
LOOKALIKES = [
    "Jan =?iso-8859-2?q?Kowalski?= <admin@lucid.example>",
    "x=?utf-8?q?y?=z",
    "=?",
    "=?utf-8?b??=",
]
# Literal breaks: refused at the door.
LITERAL_BREAKS = ["Jan\u2028Bcc: victim@attacker.example", "Jan\x85Bcc: victim@attacker.example"]


def shown_name(header: str) -> tuple[str, str]:
    """What an RFC 2047 reader shows for `[To:] name <address>`: the whitespace between two
    adjacent encoded-words is dropped (RFC 2047 6.2). CPython's address parser keeps it as a
    space instead, a deviation of its own: its own long display names do not round-trip."""
    value = re.sub(r"\r\n[ \t]", " ", header)
    if re.match(r"[A-Za-z-]+:", value):
        value = value.split(":", 1)[1]
    name, address = parseaddr(value.strip())
    return str(make_header(decode_header(name))), address


# A naughty-string corpus, written for these tests after the kinds of the well-known lists:
# scripts, SQL, bidi overrides, zero-width and combining marks, emoji sequences, CJK,
# address lists and escapes in disguise, quotes and backslashes, the longest name allowed.
NAUGHTY = [
    "null",
    "undefined",
    "\u202egnp.exe\u202c",
    "\u200bzero\u200dwidth\ufeff",
    "Ω≈ç√∫µ≤≥÷ åß∂ƒ©∆¬…æ",
    "田中さんにあげて下さい",
    "👩‍👩‍👧‍👦 🇵🇱 😀",
    "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇",
    "<script>alert(1)</script>",
    "Robert'); DROP TABLE subscribers;--",
    "%0d%0aBcc: x@attacker.example",
    "\\r\\nBcc: x@attacker.example",
    "Jan <evil@attacker.example>, other@attacker.example",
    'a\\"b"c\\',
    "=?UTF-8?Q?=0A?=",
    "?= =?",
    "Ł" * 256,
]


def filename_of(part: Any) -> str:
    """The file name a part carries, decoded (RFC 2231 and quoted-string alike).

    Not get_filename(): CPython's strips a further pair of outer quotes or angle brackets
    from whatever name it finds (`"<a>"` shows as `a`), a rule of its own."""
    return str(part["Content-Disposition"].params["filename"])
