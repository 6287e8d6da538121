"""E-mail addresses and header text: validation, normalization, privacy-preserving keys."""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata

from email_validator import EmailNotValidError, validate_email

# Bounded like the parts of an address (RFC 5321: 64 and 255), so that a long run of
# non-address text costs linear time, not quadratic.
_ATOM = r"[^\s@<>\"',;:()\[\]]"
_ADDRESS = re.compile(_ATOM + "{1,64}@" + _ATOM + "{1,253}")

# C0 controls, DEL, C1 controls, the Unicode line and paragraph separators and lone UTF-16
# surrogates (no UTF-8 for them): any of them in a header value is either an injection
# attempt or a header that folds or encodes wrongly.
_HEADER_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


class InvalidAddress(ValueError):
    """Not an address we can send to; the message never repeats the address."""


def normalize_address(address: str) -> str:
    """The address as it goes into the envelope and headers.

    IDN domains become their ASCII (punycode) form, so no SMTPUTF8 is needed; local parts
    must be ASCII. No DNS lookups: deliverability is the relay's business.
    """
    if unsafe_for_header(address):
        raise InvalidAddress("contains a control character")
    try:
        valid = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        detail = str(exc).replace(address, "<address>") if address else str(exc)
        raise InvalidAddress(f"not a valid e-mail address ({detail})") from None
    assert valid.ascii_email is not None  # allow_smtputf8=False guarantees it
    return valid.ascii_email


def unsafe_for_header(value: str) -> bool:
    """True when the text holds a line break or another control character."""
    return _HEADER_UNSAFE.search(value) is not None


def header_safe(value: str) -> str:
    """Text that becomes (part of) a header, NFC-normalized; ValueError if it is unsafe."""
    if unsafe_for_header(value):
        raise ValueError("contains a line break or control character")
    return unicodedata.normalize("NFC", value)


def address_key(hash_key: bytes, address: str) -> bytes:
    """A keyed hash of an address: what the database stores instead of the address.

    Lower-cased, because mailbox providers treat local parts case-insensitively in practice
    and a suppression must not be dodged by capitalization.
    """
    return hmac.new(hash_key, address.lower().encode(), hashlib.sha256).digest()


def typed_address_key(hash_key: bytes, typed: str) -> bytes:
    """The key of an address an operator typed, spaces around it ignored; InvalidAddress
    when it is not one. The address itself is neither kept nor shown."""
    return address_key(hash_key, normalize_address(typed.strip()))


def address_ref(key: bytes) -> str:
    """A short, stable, non-reversible reference for logs: '#' and 8 hex digits of the key."""
    return "#" + key[:4].hex()


def mask_address(address: str) -> str:
    """For pages shown to the recipient: 'jan.kowalski@example.pl' → 'j***i@e***e.pl'."""
    local, _, domain = address.rpartition("@")
    host, dot, tld = domain.rpartition(".")
    if not dot:
        host, tld = domain, ""

    def mask(part: str) -> str:
        return part[:1] + "***" + (part[-1:] if len(part) > 2 else "")

    return f"{mask(local)}@{mask(host)}{dot}{tld}"


def mask_addresses(text: str) -> str:
    """Every address-like run in free text masked as `mask_address` does; the rest kept."""
    if "@" not in text:
        return text
    return _ADDRESS.sub(lambda m: mask_address(m.group(0)), text)
