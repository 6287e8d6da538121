"""The relay's refusals, sorted into the few classes metrics carry."""

from __future__ import annotations

import pytest

from mailer.core.relay_failures import failure_class


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("relay refused authentication: 535 5.7.8 Authentication credentials invalid", "auth"),
        ("relay unavailable: relay does not offer STARTTLS", "tls"),
        ("relay unavailable: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed", "tls"),
        ("relay unavailable: Timed out connecting to 127.0.0.1 on port 2525", "timeout"),
        ("553 5.1.8 <news@lucid.example>: Sender address rejected", "sender"),
        ("550 5.7.1 Relaying denied", "sender"),
        (
            "relay unavailable: Error connecting to 127.0.0.1 on port 1: Connection refused",
            "connection",
        ),
        ("relay unavailable: Server disconnected unexpectedly", "connection"),
        ("something else entirely", "other"),
    ],
)
def test_each_refusal_has_one_class(reason: str, expected: str) -> None:
    assert failure_class(reason) == expected
