"""The one write model: what each attempt's outcome records, in milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailer.core.deliveries import (
    GAVE_UP,
    MAX_REPLY_CHARS,
    OUTCOMES,
    DeliveryStatus,
    RetryPolicy,
    Write,
    attempt_write,
    cancelled,
    clean_reply,
    handed_back,
    interrupted,
    suppressed,
    unsendable,
)
from mailer.core.outcomes import Failed, Reply, Retry, Sent

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(tiers=(30.0, 120.0, 480.0), give_up_after=3600.0)
ADDRESS = "jan@example.pl"


def write_for(outcome: Sent | Retry | Failed, tried_for: float = 0, attempts: int = 0) -> Write:
    return attempt_write(
        7,
        outcome,
        address=ADDRESS,
        message_id="<m@lucid.example>",
        attempts_before=attempts,
        tried_for=tried_for,
        now=NOW,
        policy=POLICY,
    )


def test_sent_keeps_the_reply_without_the_address_and_the_message_id() -> None:
    write = write_for(Sent(Reply(250, "2.0.0 Ok for jan@example.pl")))
    assert write == Write(
        7, DeliveryStatus.SENT, True, "250 2.0.0 Ok for <recipient>", "<m@lucid.example>"
    )
    assert write.status in OUTCOMES


def test_a_hard_bounce_fails_and_suppresses() -> None:
    write = write_for(Failed("550 5.1.1 <jan@example.pl> unknown", suppress=True))
    assert (write.status, write.reply, write.suppress, write.message_id) == (
        DeliveryStatus.FAILED,
        "550 5.1.1 <recipient> unknown",
        True,
        None,
    )


def test_a_temporary_failure_waits_longer_each_time_then_gives_up() -> None:
    later = Retry("451 4.3.0 later", deferred=True)
    first = write_for(later, attempts=0)
    assert (first.status, first.not_before) == (
        DeliveryStatus.RETRYING,
        NOW + timedelta(seconds=30),
    )
    assert write_for(later, attempts=2).not_before == NOW + timedelta(seconds=480)
    final = write_for(later, tried_for=3600)
    assert (final.status, final.detail, final.not_before) == (DeliveryStatus.FAILED, GAVE_UP, None)


def test_a_relay_fault_is_held_however_long_it_lasts() -> None:
    held = write_for(Retry("553 5.1.8 Sender address rejected", relay_fault=True), tried_for=1e9)
    assert held.status == DeliveryStatus.RETRYING
    assert held.detail is not None and "not the recipient" in held.detail
    assert not held.suppress


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("550 Użytkownik nie istnieje".encode("iso-8859-2"), "550 Użytkownik nie istnieje"),
        ("550 Użytkownik nie istnieje".encode("cp1250"), "550 Użytkownik nie istnieje"),
        ("550 Użytkownik nie istnieje".encode(), "550 Użytkownik nie istnieje"),
        (b"550 bad\x00byte\r\nBcc: x", "550 bad byte Bcc: x"),
        (b"451 line\xe2\x80\xa8sep", "451 line sep"),
        (b"\xff\xfe\x81", "\u02d9\u0163\ufffd"),
    ],
)
def test_replies_are_stored_as_clean_text(raw: bytes, expected: str) -> None:
    text = raw.decode("utf-8", "surrogateescape")  # how aiosmtplib hands replies over
    cleaned = clean_reply(text)
    assert cleaned == expected
    cleaned.encode("utf-8")  # PostgreSQL takes it: no surrogates, no NUL
    assert "\x00" not in cleaned


def test_a_reply_is_bounded() -> None:
    assert len(clean_reply("5" * 10_000)) == MAX_REPLY_CHARS


def test_a_cleaned_reply_reaches_the_write() -> None:
    text = b"550 5.1.1 U\xbfytkownik jan@example.pl\x00".decode("utf-8", "surrogateescape")
    write = write_for(Failed(text, suppress=True))
    assert write.reply == "550 5.1.1 Użytkownik <recipient>"


def test_writes_that_do_not_attempt() -> None:
    assert handed_back(1, 0) == Write(1, DeliveryStatus.PENDING)
    assert handed_back(1, 2, NOW) == Write(1, DeliveryStatus.RETRYING, not_before=NOW)
    assert suppressed(1, "unsubscribed") == Write(
        1, DeliveryStatus.SUPPRESSED, detail="unsubscribed"
    )
    assert cancelled(1).status == DeliveryStatus.CANCELLED
    failed = unsendable(1, "To: name contains\r\na line break")
    assert (failed.status, failed.attempted, failed.detail) == (
        DeliveryStatus.FAILED,
        False,
        "cannot be composed: To: name contains a line break",
    )


def test_an_interrupted_attempt_is_tried_again_later() -> None:
    write = interrupted(1, NOW, POLICY, attempts=1)
    assert (write.status, write.attempted, write.not_before) == (
        DeliveryStatus.RETRYING,
        True,
        NOW + timedelta(seconds=120),
    )
    assert write.status not in OUTCOMES
