"""Events back to the portal (CONTRACT §7): their types and the one body every event has.

An event tells the portal what became of a message, a subscription or an issue. Its body is
published as it is stored: on the `mailer.events` exchange under `<account>.<type>`, and to
an account's webhooks. `id` is the event's own and never changes, so a consumer that sees
it twice drops the repeat.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args
from uuid import UUID

from mailer.core.deliveries import DeliveryStatus

DEFAULT_ACCOUNT = "default"  # until accounts exist (CONTRACT §6)

EventType = Literal[
    "message.delivered",  # the relay took it (or the embedded capture server: detail.captured)
    "message.deferred",  # a temporary failure; retrying
    "message.failed",
    "message.suppressed",
    "message.bounced",  # detail.class: hard, soft or policy
    "message.complained",
    "subscription.confirmed",
    "subscription.unsubscribed",
    "issue.started",
    "issue.finished",
    "issue.paused",  # detail.reason
    "domain.records",  # with accounts
    "domain.verified",  # with accounts
    "domain.failed",  # with accounts
    "account.paused",  # with accounts
]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)
NOT_YET_EMITTED: tuple[EventType, ...] = (
    "domain.records",
    "domain.verified",
    "domain.failed",
    "account.paused",
)
BounceClass = Literal["hard", "soft", "policy"]
MessageKind = Literal["receipt", "confirmation", "newsletter", "subscription"]

# A delivery's new status, as the event it is; a status with none has no event.
_DELIVERY_EVENTS: dict[DeliveryStatus, EventType] = {
    DeliveryStatus.SENT: "message.delivered",
    DeliveryStatus.CAPTURED: "message.delivered",
    DeliveryStatus.RETRYING: "message.deferred",
    DeliveryStatus.FAILED: "message.failed",
    DeliveryStatus.SUPPRESSED: "message.suppressed",
    DeliveryStatus.BOUNCED: "message.bounced",
}


def event_type(text: str) -> EventType:
    """The event type `text` names; ValueError for one that is not."""
    for known in EVENT_TYPES:
        if known == text:
            return known
    raise ValueError(f"{text!r} is not an event type")


def delivery_event_type(status: DeliveryStatus, *, attempted: bool) -> EventType | None:
    """The event of a delivery written with `status`; None for one with none: cancelled, or
    handed back without an attempt (pending, or retrying again without one)."""
    if status in (DeliveryStatus.PENDING, DeliveryStatus.RETRYING) and not attempted:
        return None
    return _DELIVERY_EVENTS.get(status)


def delivery_detail(
    status: DeliveryStatus,
    *,
    reply: str | None,
    reason: str | None,
    retry_at: datetime | None,
) -> dict[str, Any]:
    """What a message event's `detail` says: the relay's reply (the address scrubbed from
    it), why it was not sent or failed, when it is tried again; `captured` for a message the
    embedded capture server took (it was not delivered)."""
    detail: dict[str, Any] = {}
    if reply is not None:
        detail["reply"] = reply
    if status == DeliveryStatus.CAPTURED:
        detail["captured"] = True
    if reason is not None and status != DeliveryStatus.SENT:
        detail["reason"] = reason
    if retry_at is not None and status == DeliveryStatus.RETRYING:
        detail["retry_at"] = moment(retry_at)
    return detail


@dataclass(frozen=True, slots=True)
class Event:
    """One event to write to the outbox, with what its body says."""

    id: UUID
    type: EventType
    occurred_at: datetime
    account: str = DEFAULT_ACCOUNT
    job_id: UUID | None = None
    kind: str | None = None
    list: str | None = None
    recipient: str | None = None
    message_id: str | None = None
    detail: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the outbox keeps it: `position` is its place in the order of commits."""

    position: int
    id: UUID
    type: EventType
    occurred_at: datetime
    account: str
    body: dict[str, Any]


def moment(at: datetime) -> str:
    """An event's time as its body carries it: UTC, to the millisecond, with a Z."""
    if at.utcoffset() is None:
        raise ValueError(f"{at!r} has no time zone")
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def body(event: Event) -> dict[str, Any]:
    """The event as published (CONTRACT §7): every field present, null when it has none."""
    return {
        "id": str(event.id),
        "type": event.type,
        "occurred_at": moment(event.occurred_at),
        "account": event.account,
        "job_id": str(event.job_id) if event.job_id is not None else None,
        "kind": event.kind,
        "list": event.list,
        "recipient": event.recipient,
        "message_id": event.message_id,
        "detail": dict(event.detail) if event.detail is not None else {},
    }


def routing_key(account: str, type_: EventType) -> str:
    """Where the event goes on `mailer.events`: `<account>.<type>`."""
    return f"{account}.{type_}"


def order_key(event_body: Mapping[str, Any]) -> tuple[object, ...]:
    """What events must reach a consumer in the order they happened share: one message (a
    receipt is its job; a newsletter message its issue and recipient), one subscription
    (its list and person), one issue. The relay publishes events with the same key one after
    another, and those with different keys together."""
    kind = event_body.get("kind")
    if kind in ("receipt", "confirmation"):
        return ("job", event_body.get("job_id"))
    if kind == "subscription":
        return ("subscription", event_body.get("list"), event_body.get("recipient"))
    if str(event_body.get("type", "")).startswith("issue."):
        return ("job", event_body.get("job_id"))
    return ("message", event_body.get("job_id"), event_body.get("recipient"))


def encode(event_body: Mapping[str, Any]) -> bytes:
    """The bytes published: the body as JSON, UTF-8."""
    return json.dumps(event_body, separators=(",", ":"), ensure_ascii=False).encode()
