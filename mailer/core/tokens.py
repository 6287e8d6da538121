"""Keys derived from the one configured secret, and the signed tokens made with them."""

from __future__ import annotations

import hashlib
import hmac


def derive_key(secret: bytes, purpose: str) -> bytes:
    """An independent key per purpose, so that one use can never stand in for another."""
    return hmac.new(secret, b"mailer/" + purpose.encode(), hashlib.sha256).digest()
