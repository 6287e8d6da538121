"""Standard Webhooks 1.0 (https://www.standardwebhooks.com/): secrets, the batch's id, and
the `webhook-signature` header.

A secret is `whsec_` + the standard base64 of its random bytes; what is signed is
`{webhook-id}.{webhook-timestamp}.{body}`, with HMAC-SHA256 keyed by the secret's bytes, and
sent as `v1,<base64 of the MAC>`. During a secret rotation both secrets sign, and the header
carries both signatures separated by a space: a receiver holding either one accepts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from uuid import UUID

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every secret, not one
SECRET_BYTES = 32  # the standard asks for 24 to 64


def secret_text(random_bytes: bytes) -> str:
    """The secret as the receiver is given it, from `SECRET_BYTES` random bytes."""
    if not 24 <= len(random_bytes) <= 64:
        raise ValueError("a webhook secret is 24 to 64 random bytes")
    return SECRET_PREFIX + base64.b64encode(random_bytes).decode("ascii")


def secret_bytes(secret: str) -> bytes:
    """The key of a `whsec_…` secret; ValueError when it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is whsec_ and base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("a webhook secret holds 24 to 64 bytes")
    return key


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64>` of one secret's key."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    mac = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def signature_header(keys: Sequence[bytes], message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per secret in force, newest first."""
    if not keys:
        raise ValueError("no secret to sign with")
    return " ".join(signature(key, message_id, timestamp, body) for key in keys)


def batch_id(endpoint: UUID, replays: int, after: int, through: int) -> str:
    """The `webhook-id` of the batch of events after position `after` through `through`:
    the same on every retry of that batch, so that a receiver can drop a repeat; a new one
    when an operator replays (`replays` counts them), so that the replay is not dropped."""
    return f"msg_{endpoint.hex}_{replays}_{after}_{through}"
