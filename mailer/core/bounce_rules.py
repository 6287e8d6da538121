"""What a classified bounce report may change, for the one delivery its return path names.

The return path is signed, so the delivery is known; what the report says of it is checked
against that delivery before anything changes: a report whose DSN envelope id names another
delivery, or whose recipients are all someone else (by Original- or Final-Recipient),
changes nobody's standing. Then:

- hard: the delivery is bounced and the address suppressed for everything, receipts too;
- soft: the delivery is bounced and the address gets its point for the day (newsletters
  are suppressed only after enough bounce days: `soft_bounce_decision`);
- policy: the delivery is bounced, but nothing counts against the recipient; it is counted
  for the destination domain and alerted;
- complaint: the person is unsubscribed from every list and flagged for operators;
- ignored, unparseable: nothing changes.

A delivery is recorded bounced once: a report about one that had bounced already, or that was
never sent, changes nothing, and its outcome says which (`not_bounced`).

Pure: values in, an Effect out.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailer.core.addresses import address_key
from mailer.core.bounces.kinds import GRAVITY, Kind, Recipient, Report
from mailer.core.deliveries import HANDED_OVER, DeliveryStatus


@dataclass(frozen=True, slots=True)
class Effect:
    kind: Kind
    reason: str
    status: str | None = None
    diagnostic: str | None = None
    domain: str | None = None  # the recipient's domain, where the report names them
    applies: bool = True  # False: the report does not speak of this delivery's recipient
    evidence: str | None = None  # what decided the kind: a field or a phrase

    @property
    def bounces(self) -> bool:
        """Whether the delivery is recorded bounced."""
        return self.applies and self.kind in (Kind.HARD, Kind.SOFT, Kind.POLICY)


def effect_of(report: Report, *, delivery_id: int, recipient_key: bytes, hash_key: bytes) -> Effect:
    """What `report`, sent to the return path of `delivery_id`, says of that delivery, whose
    recipient's keyed hash is `recipient_key`."""
    if report.envelope_id is not None and report.envelope_id.strip() != str(delivery_id):
        return Effect(
            report.kind,
            "changes nothing: its envelope id names another delivery",
            applies=False,
            evidence=report.evidence,
        )
    named = [one for one in report.recipients if one.address]
    ours = [
        one
        for one in named
        if any(
            address_key(hash_key, address) == recipient_key
            for address in (one.address, one.final_recipient)
            if address
        )
    ]
    if named and not ours:
        return Effect(
            report.kind,
            "changes nothing: it names another recipient",
            applies=False,
            evidence=report.evidence,
        )
    if not ours:  # no address given (a redacted complaint): the signed token alone names it
        unnamed = report.recipients[0] if report.recipients else None
        return _effect(report.kind, report.reason, unnamed, report.evidence)
    grave = min(ours, key=lambda one: GRAVITY.index(one.kind))
    return _effect(grave.kind, grave.reason, grave, grave.evidence)


def _effect(kind: Kind, reason: str, recipient: Recipient | None, evidence: str | None) -> Effect:
    if recipient is None:
        return Effect(kind, reason, evidence=evidence)
    domain = None
    if recipient.address and "@" in recipient.address:
        domain = recipient.address.rpartition("@")[2].lower()[:255] or None
    return Effect(kind, reason, recipient.status, recipient.diagnostic, domain, evidence=evidence)


def not_bounced(status: str) -> str:
    """What a report that bounces its delivery changed when the delivery could not be
    recorded bounced, by the status it has now."""
    if status == DeliveryStatus.BOUNCED:
        return "nothing more: the delivery had bounced already"
    if status == "gone":
        return "nothing: its delivery no longer exists"
    if status in HANDED_OVER:  # changed again between the refused write and now
        return f"nothing: the delivery changed meanwhile (it is {status} now)"
    return f"nothing: the delivery was never sent (it is {status})"
