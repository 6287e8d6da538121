from __future__ import annotations

import pytest

from mailer.core.consent import Send, Suppress, decide_newsletter, decide_receipt
from mailer.core.outcomes import (
    Failed,
    Reply,
    Retry,
    Sent,
    classify,
    delay_tiers,
    retry_delay,
    transport_failure,
)
from mailer.core.scrubbing import scrub


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(250, "2.0.0 Ok: queued as ABC"), Sent(Reply(250, "2.0.0 Ok: queued as ABC"))),
        (Reply(451, "4.3.0 Try again later"), Retry("451 4.3.0 Try again later", deferred=True)),
        (
            Reply(421, "4.7.0 Too many connections"),
            Retry("421 4.7.0 Too many connections", deferred=True),
        ),
        (
            Reply(550, "5.1.1 <x>: Recipient address rejected: User unknown"),
            Failed("550 5.1.1 <x>: Recipient address rejected: User unknown", suppress=True),
        ),
        (
            Reply(553, "5.1.3 Bad recipient address syntax"),
            Failed("553 5.1.3 Bad recipient address syntax", suppress=True),
        ),
        (Reply(552, "5.3.4 Message too big"), Failed("552 5.3.4 Message too big")),
        (Reply(554, "5.7.1 Rejected by policy"), Failed("554 5.7.1 Rejected by policy")),
        (Reply(550, "Mailbox unavailable"), Failed("550 Mailbox unavailable")),
    ],
)
def test_the_reply_decides(reply: Reply, expected: object) -> None:
    assert classify(reply) == expected


def test_scrub_removes_the_address_whatever_its_case() -> None:
    text = "550 5.1.1 <Jan.Kowalski@Example.pl>: Recipient address rejected"
    assert (
        scrub(text, "jan.kowalski@example.pl")
        == "550 5.1.1 <recipient>: Recipient address rejected"
    )


def test_delays_grow_and_are_capped() -> None:
    tiers = delay_tiers(30, 3600, 4)
    assert tiers == (30, 120, 480, 1920, 3600)
    assert [retry_delay(n, tiers) for n in (1, 2, 3, 4, 5, 6, 50)] == [
        30,
        120,
        480,
        1920,
        3600,
        3600,
        3600,
    ]
    assert delay_tiers(30, 30, 4) == (30,)


def test_receipts_ignore_opt_outs_but_not_suppressions() -> None:
    assert decide_receipt(None) == Send()
    assert decide_receipt("hard_bounce") == Suppress("hard_bounce")
    assert decide_receipt("complaint") == Suppress("complaint")
    assert decide_receipt("erased") == Send()


def test_newsletters_need_a_current_subscription() -> None:
    assert decide_newsletter("subscribed", None) == Send()
    assert decide_newsletter("unsubscribed", None) == Suppress("unsubscribed")
    assert decide_newsletter("pending", None) == Suppress("not_subscribed")
    assert decide_newsletter(None, None) == Suppress("not_subscribed")
    assert decide_newsletter("subscribed", "erased") == Suppress("erased")


def test_scrub_without_an_address_changes_nothing() -> None:
    assert scrub("451 4.3.0 later", "") == "451 4.3.0 later"


@pytest.mark.parametrize(
    "reply",
    [
        Reply(553, "5.1.8 Sender address rejected: Domain not found", stage="mail"),
        Reply(550, "5.7.1 Sender rejected", stage="mail"),
        Reply(530, "5.7.0 Authentication required", stage="mail"),
        Reply(451, "4.1.8 Sender address rejected", stage="mail"),
        # Postfix with smtpd_delay_reject answers the sender's fault at RCPT.
        Reply(553, "5.1.8 <news@lucid.example>: Sender address rejected", stage="rcpt"),
        Reply(550, "5.1.7 Bad sender's mailbox address syntax", stage="rcpt"),
    ],
)
def test_a_refused_sender_is_held_never_the_recipients_fault(reply: Reply) -> None:
    outcome = classify(reply)
    assert outcome == Retry(str(reply), relay_fault=True)


def test_a_session_that_cannot_be_had_is_the_relays_fault() -> None:
    assert transport_failure("relay unavailable", relay_fault=True).relay_fault
    assert not transport_failure("connection lost").relay_fault


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        # Our relaying or sender refused at RCPT: the relay's problem, never the recipient's.
        (
            Reply(554, "5.7.1 <x>: Relay access denied", stage="rcpt"),
            Retry("554 5.7.1 <x>: Relay access denied", relay_fault=True),
        ),
        (
            Reply(553, "5.1.8 <no-reply@lucid.example>: Sender address rejected", stage="rcpt"),
            Retry("553 5.1.8 <no-reply@lucid.example>: Sender address rejected", relay_fault=True),
        ),
        (
            Reply(550, "5.1.1 sender unknown", stage="mail"),
            Retry("550 5.1.1 sender unknown", relay_fault=True),
        ),
        # Only the hard codes suppress: 5.1.0 and 5.1.4 say too little about the mailbox.
        (Reply(550, "5.1.0 Address rejected", stage="rcpt"), Failed("550 5.1.0 Address rejected")),
        (Reply(550, "5.1.4 Ambiguous", stage="rcpt"), Failed("550 5.1.4 Ambiguous")),
        (
            Reply(550, "5.1.10 Recipient has null MX", stage="rcpt"),
            Failed("550 5.1.10 Recipient has null MX", suppress=True),
        ),
        (
            Reply(550, "5.1.1 User unknown", stage="data"),
            Failed("550 5.1.1 User unknown", suppress=True),
        ),
    ],
)
def test_the_session_path_uses_the_bounce_classifier(reply: Reply, expected: object) -> None:
    assert classify(reply) == expected


def test_soft_bounces_hold_newsletters_only_and_an_operators_suppression_holds_all() -> None:
    assert decide_receipt("soft_bounce") == Send()
    assert decide_newsletter("subscribed", "soft_bounce") == Suppress("soft_bounce")
    assert decide_receipt("manual") == Suppress("manual")
