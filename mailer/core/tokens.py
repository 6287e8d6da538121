"""Keys derived from the configured secrets, and the signed tokens in unsubscribe and
confirmation links.

A token is base64url of: purpose-specific payload, a one-byte key id, and the first 12 bytes
(96 bits) of an HMAC-SHA256 over all of it. The key id is a fingerprint of the signing key,
so links signed with a retired key still work while `retired_secret_keys` lists it. Tokens
are short on purpose: the List-Unsubscribe URL must fit one header line unfolded.

    unsubscribe: subscriber id (6 bytes), list id (2 bytes)             → 28 characters
    confirm:     subscriber id (6 bytes), list id (2 bytes), day (2 bytes) → 31 characters
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Purpose = Literal["unsubscribe", "confirm"]
_MAC_BYTES = 12
_LAYOUT: dict[Purpose, struct.Struct] = {
    "unsubscribe": struct.Struct(">6sH"),
    "confirm": struct.Struct(">6sHH"),
}
MAX_SUBSCRIBER_ID = 2**48 - 1


def derive_key(secret: bytes, purpose: str) -> bytes:
    """An independent key per purpose, so that one use can never stand in for another."""
    return hmac.new(secret, b"mailer/" + purpose.encode(), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class TokenKeys:
    """The key that signs new tokens, and every key whose tokens are still accepted."""

    signing: bytes
    accepted: tuple[bytes, ...]

    @classmethod
    def from_secrets(cls, current: bytes, retired: Sequence[bytes] = ()) -> TokenKeys:
        signing = derive_key(current, "tokens")
        return cls(signing, (signing, *(derive_key(old, "tokens") for old in retired)))


def _key_id(key: bytes) -> int:
    return hashlib.sha256(key).digest()[0]


def _mac(key: bytes, purpose: Purpose, body: bytes) -> bytes:
    return hmac.new(key, purpose.encode() + body, hashlib.sha256).digest()[:_MAC_BYTES]


def _sign(keys: TokenKeys, purpose: Purpose, payload: bytes) -> str:
    body = payload + bytes([_key_id(keys.signing)])
    raw = body + _mac(keys.signing, purpose, body)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _open(keys: TokenKeys, purpose: Purpose, token: str) -> bytes | None:
    """The payload of a token this purpose and one of these keys made, else None."""
    layout = _LAYOUT[purpose]
    expected = layout.size + 1 + _MAC_BYTES
    if len(token) != -(-expected * 4 // 3) or not token.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != expected:
        return None
    body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    for key in keys.accepted:
        if _key_id(key) == body[-1] and hmac.compare_digest(_mac(key, purpose, body), mac):
            return body[:-1]
    return None


def _subscriber_bytes(subscriber_id: int) -> bytes:
    if not 0 < subscriber_id <= MAX_SUBSCRIBER_ID:
        raise ValueError("subscriber id out of range")
    return subscriber_id.to_bytes(6, "big")


@dataclass(frozen=True, slots=True)
class Subscription:
    """Whom a token speaks for: one subscriber on one list."""

    subscriber_id: int
    list_id: int


def unsubscribe_token(keys: TokenKeys, subscription: Subscription) -> str:
    payload = _LAYOUT["unsubscribe"].pack(
        _subscriber_bytes(subscription.subscriber_id), subscription.list_id
    )
    return _sign(keys, "unsubscribe", payload)


def read_unsubscribe_token(keys: TokenKeys, token: str) -> Subscription | None:
    payload = _open(keys, "unsubscribe", token)
    if payload is None:
        return None
    subscriber, list_id = _LAYOUT["unsubscribe"].unpack(payload)
    return Subscription(int.from_bytes(subscriber, "big"), list_id)


def confirm_token(keys: TokenKeys, subscription: Subscription, day: int) -> str:
    """`day`: days since 1970-01-01 when the link was made; links expire."""
    payload = _LAYOUT["confirm"].pack(
        _subscriber_bytes(subscription.subscriber_id), subscription.list_id, day % 65536
    )
    return _sign(keys, "confirm", payload)


def read_confirm_token(
    keys: TokenKeys, token: str, *, today: int, max_age_days: int
) -> Subscription | None:
    payload = _open(keys, "confirm", token)
    if payload is None:
        return None
    subscriber, list_id, day = _LAYOUT["confirm"].unpack(payload)
    if (today - day) % 65536 > max_age_days:
        return None
    return Subscription(int.from_bytes(subscriber, "big"), list_id)
