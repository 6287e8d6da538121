from __future__ import annotations

import hashlib
import os
import random
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import dkim
import pytest
from dkim.canonicalization import CanonicalizationPolicy

from mailer.core.messages import Draft, ListHeaders, Mailbox, compose
from mailer.core.rendering import Rendered
from mailer.core.signing import (
    DkimpySigner,
    NoSigner,
    OpenSSLSigner,
    generate_key,
    header_list,
    load_key,
    relaxed_body_digest,
    txt_strings,
)
from tests.conftest import DkimKeys
from tests.support.dkim import signature_tags

NOW = 1795600000
RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
VERIFIER = Path(__file__).resolve().parents[1] / "support" / "verify_dkim.pl"


def message(list_headers: bool = True) -> bytes:
    return compose(
        Draft(
            sender=Mailbox("news@lucid.example", "Lucid News"),
            to=Mailbox("anna@example.pl", "Anna Nowak"),
            message_id="<x@lucid.example>",
            date=datetime(2026, 11, 24, tzinfo=UTC),
            content=Rendered("Nowości", "<p>Cześć</p>", "Cześć\n"),
            list_headers=ListHeaders(
                "Lucid News <lucid-news.lucid.example>", "https://mail.lucid.example/u/abc"
            )
            if list_headers
            else None,
        )
    )


@pytest.mark.parametrize("signer_class", [OpenSSLSigner, DkimpySigner])
def test_rsa_and_ed25519_signatures_verify_with_dkimpy(
    signer_class: type[OpenSSLSigner] | type[DkimpySigner], dkim_keys: DkimKeys
) -> None:
    signed = signer_class([dkim_keys.rsa, dkim_keys.ed25519]).sign(message(), NOW)
    verifier = dkim.DKIM(signed)
    assert verifier.verify(idx=0, dnsfunc=dkim_keys.dns)
    assert verifier.verify(idx=1, dnsfunc=dkim_keys.dns)
    assert signature_tags(signed, 0)["a"] == "rsa-sha256"
    assert signature_tags(signed, 1)["a"] == "ed25519-sha256"


def test_signature_tags(dkim_keys: DkimKeys) -> None:
    tags = signature_tags(OpenSSLSigner([dkim_keys.rsa]).sign(message(), NOW))
    assert tags["c"] == "relaxed/relaxed"
    assert tags["d"] == "lucid.example"
    assert tags["s"] == dkim_keys.rsa.selector
    assert tags["t"] == str(NOW)
    assert "l" not in tags
    signed_headers = tags["h"].split(":")
    for name in (
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ):
        assert signed_headers.count(name) == 2, name  # present once, signed twice: over-signed
    assert "content-type" in signed_headers and "mime-version" in signed_headers


def test_signing_lines_stay_short(dkim_keys: DkimKeys) -> None:
    signed = OpenSSLSigner([dkim_keys.rsa, dkim_keys.ed25519]).sign(message(), NOW)
    header = signed.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in header.split(b"\r\n")) <= 78


def test_a_changed_message_no_longer_verifies(dkim_keys: DkimKeys) -> None:
    signed = OpenSSLSigner([dkim_keys.rsa]).sign(message(), NOW)
    tampered = signed.replace(b"https://mail.lucid.example/u/abc", b"https://evil.example/u/abc")
    assert not dkim.DKIM(tampered).verify(dnsfunc=dkim_keys.dns)
    added = signed.replace(b"\r\n\r\n", b"\r\nSubject: second subject\r\n\r\n", 1)
    assert not dkim.DKIM(added).verify(dnsfunc=dkim_keys.dns)


def test_header_list_without_list_headers() -> None:
    headers, _ = dkim.rfc822_parse(message(list_headers=False))
    names = header_list(headers)
    assert b"list-unsubscribe" not in names
    assert names.count(b"from") == 2


def test_weak_or_unknown_keys_are_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="1024 bits"):
        load_key(weak, domain="x.example", selector="s")
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="only RSA and Ed25519"):
        load_key(other, domain="x.example", selector="s")
    with pytest.raises(ValueError, match="not an unencrypted PEM"):
        load_key(b"nonsense", domain="x.example", selector="s")


def test_dns_record_is_split_into_255_byte_strings() -> None:
    record = generate_key("rsa", domain="lucid.example", selector="s").dns_record()
    parts = txt_strings(record)
    assert record.startswith("v=DKIM1; k=rsa; p=")
    assert len(parts) == 2
    assert all(len(part) <= 255 for part in parts)
    assert "".join(parts) == record


def test_an_independent_verifier_accepts_the_rsa_signature(dkim_keys: DkimKeys) -> None:
    """Mail::DKIM (Perl) as a second opinion; Debian's version predates Ed25519 (RFC 8463)."""
    if (
        subprocess.run(
            ["perl", "-MMail::DKIM::Verifier", "-e", "1"], capture_output=True, check=False
        ).returncode
        != 0
    ):
        if os.environ.get("CI") == "true":
            pytest.fail("Mail::DKIM is not installed (scripts/test installs libmail-dkim-perl)")
        pytest.skip("Mail::DKIM is not installed")
    signed = OpenSSLSigner([dkim_keys.rsa, dkim_keys.ed25519]).sign(message(), NOW)
    records = [
        f"{k.selector}._domainkey.{k.domain}={k.dns_record()}"
        for k in (dkim_keys.rsa, dkim_keys.ed25519)
    ]
    result = subprocess.run(
        ["perl", str(VERIFIER), *records], input=signed, capture_output=True, check=True
    )
    lines = result.stdout.decode().splitlines()
    assert lines[0] == f"pass rsa-sha256 {dkim_keys.rsa.selector} (pass)"
    assert lines[1].startswith("invalid ed25519-sha256")  # "unsupported algorithm", not a mismatch
    assert "unsupported algorithm" in lines[1]


def test_without_keys_the_message_goes_out_as_it_is() -> None:
    assert NoSigner().sign(b"Subject: x\r\n\r\nbody\r\n", NOW) == b"Subject: x\r\n\r\nbody\r\n"
    with pytest.raises(ValueError, match="at least one key"):
        OpenSSLSigner([])


@pytest.mark.parametrize("slice_bytes", [1, 2, 5, 16, 65536])
def test_the_body_hash_is_dkimpys_whatever_the_slices(slice_bytes: int) -> None:
    """Trailing blanks, runs of spaces and tabs, bare LFs and empty lines at the end, cut
    anywhere: the digest is that of dkimpy's relaxed canonical body."""
    chooser = random.Random(slice_bytes)
    atoms = [b"\r\n", b"\n", b"\r", b" ", b"\t", b"  \t", b"a", b"bc", b"\r\n\r\n"]
    for _ in range(300):
        body = b"".join(chooser.choice(atoms) for _ in range(chooser.randrange(50)))
        _, parsed = dkim.rfc822_parse(b"Subject: x\r\n\r\n" + body)
        expected = hashlib.sha256(RELAXED.canonicalize_body(parsed)).digest()
        assert relaxed_body_digest(body, slice_bytes) == expected, body


def test_a_large_body_with_awkward_edges_verifies(dkim_keys: DkimKeys) -> None:
    """A 2 MB body with trailing blanks on lines, tabs, and empty lines at its end, signed
    with RSA and Ed25519: dkimpy verifies both signatures."""
    body = b"Cze\xc5\x9b\xc4\x87 \t  world  \r\n\tindented\r\n" * 60_000 + b"\r\n\r\n\r\n"
    head = b"From: news@lucid.example\r\nTo: anna@example.pl\r\nSubject: x\r\n\r\n"
    signed = OpenSSLSigner([dkim_keys.rsa, dkim_keys.ed25519]).sign(head + body, NOW)
    verifier = dkim.DKIM(signed)
    assert verifier.verify(idx=0, dnsfunc=dkim_keys.dns)
    assert verifier.verify(idx=1, dnsfunc=dkim_keys.dns)
