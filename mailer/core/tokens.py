"""Keys derived from the configured secrets, and the signed tokens in unsubscribe and
confirmation links.

A token is base64url of: purpose-specific payload, a one-byte key id, and the first 12 bytes
(96 bits) of an HMAC-SHA256 over all of it. The key id is a fingerprint of the signing key,
so links signed with a retired key still work while `retired_secret_keys` lists it. Tokens
are short on purpose: the List-Unsubscribe URL must fit one header line unfolded.

    unsubscribe: subscriber id (6 bytes), list id (2 bytes)             → 28 characters
    confirm:     subscriber id (6 bytes), list id (2 bytes), day (2 bytes) → 31 characters
    undo:        subscriber id, list id, the unsubscribe's time (8 bytes, µs), expiry (4 bytes, s)
                 → 44 characters; made by the page that unsubscribed, never put in a message

Every token has one spelling: the unpadded base64url of its bytes with zero spare bits. Any
other spelling of the same bytes (`+` or `/`, padding, spare bits set) is refused, so an
altered token is never accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Self

Purpose = Literal["unsubscribe", "confirm", "undo"]
_MAC_BYTES = 12
_LAYOUT: dict[Purpose, struct.Struct] = {
    "unsubscribe": struct.Struct(">6sH"),
    "confirm": struct.Struct(">6sHH"),
    "undo": struct.Struct(">6sHqI"),
}
MAX_SUBSCRIBER_ID = 2**48 - 1


def derive_key(secret: bytes, purpose: str) -> bytes:
    """An independent key per purpose, so that one use can never stand in for another."""
    return hmac.new(secret, b"mailer/" + purpose.encode(), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """The key that signs, from the current secret, and every key whose signatures are still
    accepted (the current and the retired secrets'): derived under the subclass's purpose."""

    purpose: ClassVar[str]
    signing: bytes
    accepted: tuple[bytes, ...]

    @classmethod
    def from_secrets(cls, current: bytes, retired: Sequence[bytes] = ()) -> Self:
        signing = derive_key(current, cls.purpose)
        return cls(signing, (signing, *(derive_key(old, cls.purpose) for old in retired)))


@dataclass(frozen=True, slots=True)
class TokenKeys(SigningKeys):
    """The key that signs new tokens, and every key whose tokens are still accepted."""

    purpose = "tokens"


def _key_id(key: bytes) -> int:
    return hashlib.sha256(key).digest()[0]


def _mac(key: bytes, purpose: Purpose, body: bytes) -> bytes:
    return hmac.new(key, purpose.encode() + body, hashlib.sha256).digest()[:_MAC_BYTES]


def _sign(keys: TokenKeys, purpose: Purpose, payload: bytes) -> str:
    body = payload + bytes([_key_id(keys.signing)])
    return _spelling(body + _mac(keys.signing, purpose, body))


def _spelling(raw: bytes) -> str:
    """The one spelling of these bytes."""
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
    if len(raw) != expected or _spelling(raw) != token:
        return None  # the decoder also takes `+`, `/`, stray padding and spare bits
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


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A confirm link: whom it subscribes, and the day (since 1970-01-01) it was made."""

    subscription: Subscription
    day: int


def read_confirm_token(
    keys: TokenKeys, token: str, *, today: int, max_age_days: int
) -> Confirmation | None:
    payload = _open(keys, "confirm", token)
    if payload is None:
        return None
    subscriber, list_id, day = _LAYOUT["confirm"].unpack(payload)
    age = (today - day) % 65536
    if age > max_age_days:
        return None
    return Confirmation(Subscription(int.from_bytes(subscriber, "big"), list_id), today - age)


@dataclass(frozen=True, slots=True)
class Undo:
    """The right to take back one unsubscribe, handed out by the page that made it.

    `unsubscribed_at` (microseconds since 1970) is when that unsubscribe was recorded: the
    undo applies only while the subscription still shows that very change.
    """

    subscription: Subscription
    unsubscribed_at: int
    expires: int  # seconds since 1970


def undo_token(keys: TokenKeys, undo: Undo) -> str:
    payload = _LAYOUT["undo"].pack(
        _subscriber_bytes(undo.subscription.subscriber_id),
        undo.subscription.list_id,
        undo.unsubscribed_at,
        undo.expires,
    )
    return _sign(keys, "undo", payload)


def read_undo_token(keys: TokenKeys, token: str, *, now: int) -> Undo | None:
    """The undo this token grants, None when it is not genuine or has expired."""
    payload = _open(keys, "undo", token)
    if payload is None:
        return None
    subscriber, list_id, unsubscribed_at, expires = _LAYOUT["undo"].unpack(payload)
    if now >= expires:
        return None
    subscription = Subscription(int.from_bytes(subscriber, "big"), list_id)
    return Undo(subscription, unsubscribed_at, expires)
