"""Webhook secrets at rest: sealed with AES-GCM under a key derived from `[security]
secret_key`, so that whoever reads the database alone cannot sign as mailer.

A sealed secret is `v1.<key id>.<base64 of nonce + ciphertext>`; the key id is a byte of
the sealing key's fingerprint, so that secrets sealed under a retired `secret_key` still
open while `retired_secret_keys` lists it. The endpoint's id is the associated data: a
sealed secret copied onto another endpoint's row does not open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailer.core.tokens import derive_key

NONCE_BYTES = 12
VERSION = "v1"


class SealError(ValueError):
    """A sealed secret that does not open with any key configured."""


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class SealingKeys:
    sealing: bytes
    accepted: tuple[bytes, ...]

    @classmethod
    def from_secrets(cls, current: bytes, retired: Sequence[bytes] = ()) -> SealingKeys:
        key = derive_key(current, "webhook secrets")
        return cls(key, (key, *(derive_key(old, "webhook secrets") for old in retired)))

    def seal(self, secret: str, bound_to: bytes, nonce: bytes) -> str:
        """`nonce`: NONCE_BYTES random bytes, never used twice with one key."""
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"the nonce is {NONCE_BYTES} bytes")
        sealed = AESGCM(self.sealing).encrypt(nonce, secret.encode("utf-8"), bound_to)
        text = base64.b64encode(nonce + sealed).decode("ascii")
        return f"{VERSION}.{_key_id(self.sealing)}.{text}"

    def open(self, sealed: str, bound_to: bytes) -> str:
        version, _, rest = sealed.partition(".")
        key_id, _, text = rest.partition(".")
        if version != VERSION or not text:
            raise SealError("not a sealed webhook secret")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise SealError("not a sealed webhook secret") from None
        for key in self.accepted:
            if _key_id(key) != key_id:
                continue
            try:
                return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], bound_to).decode()
            except InvalidTag:
                break
        raise SealError(
            "a webhook secret does not open with [security] secret_key or a retired key"
        )
