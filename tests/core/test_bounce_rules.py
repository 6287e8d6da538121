"""Whether a classified report speaks of the delivery its return path names."""

from __future__ import annotations

import pytest

from mailer.core.addresses import address_key
from mailer.core.bounce_rules import effect_of, not_bounced
from mailer.core.bounces.kinds import Kind, Recipient, Report

HASH_KEY = b"k" * 32
OURS = address_key(HASH_KEY, "jan@example.pl")


def report(*recipients: Recipient, envelope_id: str | None = None) -> Report:
    return Report(Kind.HARD, "why", "dsn", recipients, envelope_id=envelope_id)


def test_the_named_recipient_must_be_the_deliverys_whatever_the_case() -> None:
    hard = Recipient("Jan@Example.PL", Kind.HARD, "5.1.1", "5.1.1", "failed", "550 gone")
    effect = effect_of(report(hard), delivery_id=7, recipient_key=OURS, hash_key=HASH_KEY)
    assert effect.applies and effect.bounces
    assert (effect.kind, effect.status, effect.domain) == (Kind.HARD, "5.1.1", "example.pl")
    other = Recipient("ola@example.pl", Kind.HARD, "5.1.1")
    effect = effect_of(report(other), delivery_id=7, recipient_key=OURS, hash_key=HASH_KEY)
    assert not effect.applies and not effect.bounces
    assert effect.reason == "changes nothing: it names another recipient"


def test_of_several_recipients_only_ours_count() -> None:
    mine = Recipient("jan@example.pl", Kind.SOFT, "mailbox full", "4.2.2")
    other = Recipient("ola@example.pl", Kind.HARD, "gone", "5.1.1")
    effect = effect_of(report(other, mine), delivery_id=7, recipient_key=OURS, hash_key=HASH_KEY)
    assert (effect.kind, effect.status) == (Kind.SOFT, "4.2.2")


def test_our_recipient_named_as_the_final_recipient_counts_and_the_evidence_follows() -> None:
    """A DSN whose Original-Recipient is an alias the relay wrote, our address its
    Final-Recipient: it speaks of our delivery."""
    hard = Recipient(
        "alias@example.pl",
        Kind.HARD,
        "gone",
        "5.1.1",
        "failed",
        None,
        "Status: 5.1.1",
        "jan@example.pl",
    )
    effect = effect_of(report(hard), delivery_id=7, recipient_key=OURS, hash_key=HASH_KEY)
    assert effect.applies and effect.kind is Kind.HARD
    assert effect.evidence == "Status: 5.1.1"


def test_an_envelope_id_of_another_delivery_changes_nothing() -> None:
    hard = Recipient("jan@example.pl", Kind.HARD, "gone")
    for envid, applies in (("7", True), (" 7 ", True), ("8", False)):
        effect = effect_of(
            report(hard, envelope_id=envid), delivery_id=7, recipient_key=OURS, hash_key=HASH_KEY
        )
        assert effect.applies is applies


def test_a_report_naming_nobody_is_tied_by_its_token_alone() -> None:
    complaint = Report(
        Kind.COMPLAINT, "ARF abuse", "arf", (Recipient(None, Kind.COMPLAINT, "ARF abuse"),)
    )
    effect = effect_of(complaint, delivery_id=7, recipient_key=OURS, hash_key=HASH_KEY)
    assert effect.applies and effect.kind is Kind.COMPLAINT and not effect.bounces
    bare = Report(Kind.UNPARSEABLE, "junk", "none")
    effect = effect_of(bare, delivery_id=7, recipient_key=OURS, hash_key=HASH_KEY)
    assert effect.applies and effect.kind is Kind.UNPARSEABLE and not effect.bounces


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("bounced", "nothing more: the delivery had bounced already"),
        ("failed", "nothing: the delivery was never sent (it is failed)"),
        ("retrying", "nothing: the delivery was never sent (it is retrying)"),
        ("gone", "nothing: its delivery no longer exists"),
        ("sent", "nothing: the delivery changed meanwhile (it is sent now)"),
    ],
)
def test_what_a_report_changed_when_its_delivery_could_not_bounce(
    status: str, outcome: str
) -> None:
    assert not_bounced(status) == outcome
    assert "is sent, not sent" not in outcome
