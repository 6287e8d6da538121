"""The signed, dated envelope sender (VERP) of every message: `b-<token>@<bounces domain>`.

A bounce comes back to the address the message was sent from, so the address itself says
which delivery bounced; no personal data is in it. The token is lowercase base32, unpadded, of

    key id (1 byte) | day (2 bytes) | delivery id (8 bytes) | HMAC-SHA256 (first 12 bytes)

= 23 bytes → 37 characters; the local part `b-<token>` is 39 octets, under the 64 of
RFC 5321 §4.5.3.1.1. The key id is a fingerprint of the signing key, so return paths signed
with a retired key still verify while it is listed. The day (days since 1970-01-01, modulo
65536) lets a token expire: after `max_age_days`, a bounce to it is refused like a forged one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from mailer.core.tokens import SigningKeys

PREFIX = "b-"
_LAYOUT = struct.Struct(">BHQ")
_MAC_BYTES = 12
_RAW_BYTES = _LAYOUT.size + _MAC_BYTES
TOKEN_LENGTH = -(-_RAW_BYTES * 8 // 5)
MAX_LOCAL_PART = 64
MAX_DELIVERY_ID = 2**63 - 1  # PostgreSQL bigint
_DAYS = 65536
_EPOCH = date(1970, 1, 1)
_PURPOSE = b"mailer/return-path"
_TOKEN = re.compile(rf"\b{PREFIX}([a-z2-7]{{{TOKEN_LENGTH}}})@", re.IGNORECASE)

assert len(PREFIX) + TOKEN_LENGTH <= MAX_LOCAL_PART


def day_number(day: date) -> int:
    """Days since 1970-01-01."""
    return (day - _EPOCH).days


def _key_id(key: bytes) -> int:
    return hashlib.sha256(key).digest()[0]


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, _PURPOSE + body, hashlib.sha256).digest()[:_MAC_BYTES]


@dataclass(frozen=True, slots=True)
class ReturnPathKeys(SigningKeys):
    """The key that signs new return paths, and every key whose return paths still verify.

    Derived from the same secrets as the link tokens, under a purpose of its own, so that a
    return path can never stand in for an unsubscribe link or the other way round.
    """

    purpose = "return-path"


def encode_token(keys: ReturnPathKeys, delivery_id: int, today: date) -> str:
    if not 0 < delivery_id <= MAX_DELIVERY_ID:
        raise ValueError("delivery id out of range")
    body = _LAYOUT.pack(_key_id(keys.signing), day_number(today) % _DAYS, delivery_id)
    raw = body + _mac(keys.signing, body)
    return base64.b32encode(raw).decode().rstrip("=").lower()


def return_path(keys: ReturnPathKeys, delivery_id: int, today: date, domain: str) -> str:
    """The envelope sender (MAIL FROM) of one delivery sent `today`."""
    return f"{PREFIX}{encode_token(keys, delivery_id, today)}@{domain}"


class Verdict(StrEnum):
    VALID = "valid"
    EXPIRED = "expired"  # signed by us, but older than allowed (or dated ahead of today)
    FORGED = "forged"  # well formed, but no accepted key signed it: altered, forged, or old key
    MALFORMED = "malformed"  # not a return-path token at all


@dataclass(frozen=True, slots=True)
class Decoded:
    """What a return path says. `delivery_id` and `day` are set only when the HMAC verified
    (valid or expired), so nothing unsigned is ever reported as ours."""

    verdict: Verdict
    delivery_id: int | None = None
    day: date | None = None

    @property
    def valid(self) -> bool:
        return self.verdict is Verdict.VALID


def _token_of(value: str) -> str:
    """The token of `b-<token>@domain`, `b-<token>` or a bare token."""
    local = value.strip().rpartition("@")[0] if "@" in value else value.strip()
    if local[: len(PREFIX)].lower() == PREFIX:
        local = local[len(PREFIX) :]
    return local


def decode(keys: ReturnPathKeys, value: str, *, today: date, max_age_days: int) -> Decoded:
    """Verify a return path (address, local part or token) as of `today`.

    Base32 is read case-insensitively: some MTAs change the case of a local part.
    """
    token = _token_of(value)
    if len(token) != TOKEN_LENGTH or not token.isascii():
        return Decoded(Verdict.MALFORMED)
    try:
        raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
    except (binascii.Error, ValueError):
        return Decoded(Verdict.MALFORMED)
    body, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
    key_id, day, delivery_id = _LAYOUT.unpack(body)
    for key in keys.accepted:
        if _key_id(key) == key_id and hmac.compare_digest(_mac(key, body), mac):
            break
    else:
        return Decoded(Verdict.FORGED)
    today_number = day_number(today)
    sent = date.fromordinal(_EPOCH.toordinal() + today_number - (today_number - day) % _DAYS)
    if (today_number - day) % _DAYS > max_age_days:
        return Decoded(Verdict.EXPIRED, delivery_id, sent)
    return Decoded(Verdict.VALID, delivery_id, sent)


def find_tokens(text: str) -> Iterator[str]:
    """Every `b-<token>@` in a text, lowercased, in order of appearance (unverified)."""
    for found in _TOKEN.finditer(text):
        yield found[1].lower()
