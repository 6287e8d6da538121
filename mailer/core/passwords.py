"""Operator passwords: argon2id hashes (argon2-cffi's defaults, RFC 9106's second choice)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()
# Verified against when the account does not exist, so that the answer takes as long.
_UNKNOWN = _HASHER.hash("no such operator")
MIN_LENGTH = 12
MAX_LENGTH = 1024


def check_new_password(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"a password has at most {MAX_LENGTH} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        return "a password may not hold control characters"
    return None


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether the password matches; a missing account costs the same time and fails."""
    try:
        return _HASHER.verify(stored or _UNKNOWN, password[:MAX_LENGTH]) and stored is not None
    except (VerificationError, InvalidHashError):
        return False
