"""⑥ Sign: DKIM-Signature header fields over the final bytes (RFC 6376, RFC 8463).

relaxed/relaxed canonicalization, an explicit header list that over-signs the headers a
forwarder must not be able to add a second copy of, no `l=` tag. dkimpy parses and
canonicalizes the header fields and selects them, so the bytes hashed are exactly what dkimpy
verifies; the body is canonicalized here, by the same rules, a slice at a time (dkimpy's
whole-body regular expressions would hold the GIL for most of a second on a 13 MB message).
The private-key operation is OpenSSL's (through `cryptography`), with the key parsed once.
dkimpy's own signer re-parses the PEM and computes RSA in pure Python on every message:
`DkimpySigner` keeps that path for comparison (see bench/).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy

from mailer.core.lines import SLICE_BYTES, line_slices

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
KeyType = Literal["rsa", "ed25519"]
KEY_TYPES: tuple[KeyType, ...] = get_args(KeyType)

# Signed if present, in this order.
SIGNED_HEADERS = (
    "from",
    "to",
    "cc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "feedback-id",
)
# Signed once more than they occur, so no copy can be added after signing (RFC 6376 §8.15).
OVERSIGNED_HEADERS = frozenset(
    {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "feedback-id",
    }
)
_CANON = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"\r?\n")
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
_WSP = re.compile(rb"[\t ]+")
MIN_RSA_BITS = 2048


class Signer(Protocol):
    def sign(self, message: bytes, timestamp: int) -> bytes:
        """The message with DKIM-Signature header field(s) prepended."""
        ...


class NoSigner:
    """For a setup without DKIM keys (local development): the message goes out unsigned."""

    def sign(self, message: bytes, timestamp: int) -> bytes:
        return message


@dataclass(frozen=True, slots=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: Algorithm
    private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    pem: bytes

    def dns_record(self) -> str:
        """The TXT record value to publish at <selector>._domainkey.<domain>."""
        public = self.private_key.public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def load_key(pem: bytes, *, domain: str, selector: str) -> DkimKey:
    """Parse a PEM private key once; ValueError says what is wrong with it."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not an unencrypted PEM private key ({exc})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} needed")
        return DkimKey(domain, selector, "rsa-sha256", key, pem)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return DkimKey(domain, selector, "ed25519-sha256", key, pem)
    raise ValueError("only RSA and Ed25519 keys are supported")


def generate_key(kind: KeyType, *, domain: str, selector: str) -> DkimKey:
    private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if kind == "rsa":
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private_key = ed25519.Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return load_key(pem, domain=domain, selector=selector)


def txt_strings(record: str, size: int = 255) -> list[str]:
    """A TXT value split into the ≤255-byte character-strings DNS requires."""
    return [record[i : i + size] for i in range(0, len(record), size)]


def header_list(headers: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
    present: dict[bytes, int] = {}
    for field, _ in headers:
        lowered = field.lower()
        present[lowered] = present.get(lowered, 0) + 1
    include: list[bytes] = []
    for name in SIGNED_HEADERS:
        count = present.get(name.encode(), 0)
        extra = 1 if name in OVERSIGNED_HEADERS else 0
        include.extend([name.encode()] * (count + extra) if count else [])
    return include


def _fold_tags(tags: Sequence[tuple[bytes, bytes]], width: int = 76) -> bytes:
    """`tag=value; …` folded only where FWS is allowed: between tags and around h= colons."""
    atoms: list[tuple[bytes, bytes]] = []  # (glue before, text)
    for index, (name, value) in enumerate(tags):
        end = b";" if index < len(tags) - 1 else b""
        pieces = (name + b"=" + value).split(b":") if name == b"h" else [name + b"=" + value]
        for position, piece in enumerate(pieces):
            last = position == len(pieces) - 1
            atoms.append((b" " if position == 0 else b"", piece + (end if last else b":")))
    lines = [b"DKIM-Signature:"]
    for glue, text in atoms:
        if len(lines[-1]) + len(glue) + len(text) > width:
            lines.append(b" " + text)
        else:
            lines[-1] += glue + text
    return b"\r\n".join(lines)[len(b"DKIM-Signature:") :]


def _fold_b64(value: bytes, width: int = 72) -> bytes:
    return b"\r\n ".join(value[i : i + width] for i in range(0, len(value), width))


def relaxed_body_digest(body: bytes, slice_bytes: int = SLICE_BYTES) -> bytes:
    """SHA-256 of the body's relaxed canonical form (RFC 6376 §3.4.4), with line ends read
    as dkimpy reads them (CR LF or a bare LF), computed a slice at a time."""
    digest = hashlib.sha256()
    held = b""  # empty lines seen last: they count only if more content follows
    content = False
    for piece in line_slices(body, slice_bytes):
        if piece.count(b"\n") != piece.count(b"\r\n"):
            piece = _LINE_END.sub(b"\r\n", piece)  # noqa: PLW2901
        piece = _WSP.sub(b" ", _TRAILING_WSP.sub(b"\r\n", piece))  # noqa: PLW2901
        end = len(piece)
        while piece.endswith(b"\r\n", 0, end):
            end -= 2
        if end == 0:
            held += piece
            continue
        digest.update(held)
        digest.update(piece[:end])
        held, content = piece[end:], True
    if content:
        digest.update(b"\r\n")  # a body that has content ends with exactly one CR LF
    return digest.digest()


class OpenSSLSigner:
    """One DKIM-Signature per key: RSA and Ed25519 both, when both are configured."""

    def __init__(self, keys: Sequence[DkimKey]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._keys = tuple(keys)

    def sign(self, message: bytes, timestamp: int) -> bytes:
        end = _HEAD_END.search(message)
        head, body = (message[: end.end()], message[end.end() :]) if end else (message, b"")
        headers, _ = dkim.rfc822_parse(head)
        body_hash = base64.b64encode(relaxed_body_digest(body))
        include = header_list(headers)
        canonical = _CANON.canonicalize_headers(headers)
        return (
            b"".join(
                self._signature(key, canonical, include, body_hash, timestamp) for key in self._keys
            )
            + message
        )

    @staticmethod
    def _signature(
        key: DkimKey,
        canonical: list[tuple[bytes, bytes]],
        include: list[bytes],
        body_hash: bytes,
        timestamp: int,
    ) -> bytes:
        tags = [
            (b"v", b"1"),
            (b"a", key.algorithm.encode()),
            (b"c", b"relaxed/relaxed"),
            (b"d", key.domain.encode()),
            (b"s", key.selector.encode()),
            (b"t", str(timestamp).encode()),
            (b"h", b":".join(include)),
            (b"bh", body_hash),
        ]
        # b= starts a line of its own and is empty while hashing (RFC 6376 §3.7).
        unsigned = _fold_tags(tags) + b";\r\n b="
        digest = hashlib.sha256()
        dkim.hash_headers(digest, _CANON, canonical, include, (b"DKIM-Signature", unsigned), None)
        if isinstance(key.private_key, rsa.RSAPrivateKey):
            signature = key.private_key.sign(
                digest.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256())
            )
        else:
            signature = key.private_key.sign(digest.digest())
        return b"DKIM-Signature:" + unsigned + _fold_b64(base64.b64encode(signature)) + b"\r\n"


class DkimpySigner:
    """dkimpy's own signer: the reference implementation, slower (pure-Python RSA)."""

    def __init__(self, keys: Sequence[DkimKey]) -> None:
        self._keys = tuple(keys)

    def sign(self, message: bytes, timestamp: int) -> bytes:
        signatures = b""
        for key in self._keys:
            headers, _ = dkim.rfc822_parse(message)
            private: bytes
            if key.algorithm == "rsa-sha256":
                private = key.pem
            else:
                assert isinstance(key.private_key, ed25519.Ed25519PrivateKey)
                raw = key.private_key.private_bytes(
                    serialization.Encoding.Raw,
                    serialization.PrivateFormat.Raw,
                    serialization.NoEncryption(),
                )
                private = base64.b64encode(raw)
            signatures += dkim.sign(
                message,
                key.selector.encode(),
                key.domain.encode(),
                private,
                signature_algorithm=key.algorithm.encode(),
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=header_list(headers),
            )
        return signatures + message
