"""A delivery's life: its statuses and their groups, and the one write model.

    pending ─claim─► sending ─write─► sent | failed | suppressed | cancelled   (final)
                        │                  └─ a bounce report ─► bounced        (final)
                        │       └───► retrying (not before a time) ─claim─► sending …
                        └ hand back (never reached the relay) ─► pending | retrying

Receipts and newsletters share this: each attempt's outcome becomes one `Write`, and only
one adapter (mailer/adapters/deliveries.py) turns writes into rows.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from mailer.core.outcomes import Failed, Outcome, Retry, Sent, retry_delay
from mailer.core.scrubbing import scrub

MAX_REPLY_CHARS = 1000
GAVE_UP = "gave up: still failing temporarily after the retry period"
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    CAPTURED = "captured"  # written to the embedded capture server: not delivered
    RETRYING = "retrying"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"
    BOUNCED = "bounced"  # went out, then a bounce report came back for it


# The statuses in groups, each in the order operators read them wherever they are shown
# (`mailer issue list`, `issue status`, the console): the outcomes, then what is left. Mail
# the embedded capture server took is `captured`, never counted as sent: it was not
# delivered. `bounced` went out, then came back.
OUTCOMES: tuple[DeliveryStatus, ...] = (
    DeliveryStatus.SENT,
    DeliveryStatus.CAPTURED,
    DeliveryStatus.BOUNCED,
    DeliveryStatus.SUPPRESSED,
    DeliveryStatus.FAILED,
    DeliveryStatus.CANCELLED,
)  # final: nothing changes a delivery once it has one of these
UNFINISHED: tuple[DeliveryStatus, ...] = (
    DeliveryStatus.PENDING,
    DeliveryStatus.SENDING,
    DeliveryStatus.RETRYING,
)
READING_ORDER = (*OUTCOMES, *UNFINISHED)  # every status
HANDED_OVER = (DeliveryStatus.SENT, DeliveryStatus.CAPTURED)  # to a relay, or to the capture


@dataclass(frozen=True, slots=True)
class Write:
    """What the store records for one delivery this worker claimed."""

    delivery_id: int
    status: DeliveryStatus
    attempted: bool = False  # an SMTP transaction was tried: counts in `attempts`
    reply: str | None = None
    message_id: str | None = None
    detail: str | None = None
    not_before: datetime | None = None
    suppress: bool = False  # the address hard-bounced: suppress it for everything


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    tiers: tuple[float, ...]
    give_up_after: float


def clean_reply(text: str) -> str:
    """A relay's words fit to store and show: valid Unicode, no NUL or other control
    characters, bounded. Bytes that are not UTF-8 arrive as surrogate escapes; Polish
    relays answer in CP1250 or ISO-8859-2 (alike for Polish letters), so they are read so."""
    raw = text.encode("utf-8", "surrogateescape")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("cp1250", "replace")
    text = _CONTROLS.sub(" ", unicodedata.normalize("NFC", text))
    text = " ".join(text.split())
    return text[:MAX_REPLY_CHARS]


def attempt_write(
    delivery_id: int,
    outcome: Outcome,
    *,
    address: str,
    message_id: str,
    attempts_before: int,
    tried_for: float,
    now: datetime,
    policy: RetryPolicy,
    captured: bool = False,
) -> Write:
    """An SMTP attempt's outcome as recorded. A temporary failure of the recipient's side
    becomes final after `give_up_after` seconds of trying; one of the relay's or ours (our
    sender refused, no session possible) never does: it is held until the relay is fixed.
    A message the embedded capture server took (`captured`) was not delivered."""
    if isinstance(outcome, Sent):
        reply = clean_reply(scrub(str(outcome.reply), address, limit=MAX_REPLY_CHARS))
        status = DeliveryStatus.CAPTURED if captured else DeliveryStatus.SENT
        return Write(delivery_id, status, True, reply, message_id)
    reply = clean_reply(scrub(outcome.reason, address, limit=MAX_REPLY_CHARS))
    if isinstance(outcome, Failed):
        return Write(
            delivery_id,
            DeliveryStatus.FAILED,
            True,
            reply,
            detail="rejected by the relay",
            suppress=outcome.suppress,
        )
    if not outcome.relay_fault and tried_for >= policy.give_up_after:
        return Write(delivery_id, DeliveryStatus.FAILED, True, reply, detail=GAVE_UP)
    delay = retry_delay(attempts_before + 1, policy.tiers)
    return Write(
        delivery_id,
        DeliveryStatus.RETRYING,
        True,
        reply,
        detail=_retry_detail(outcome),
        not_before=now + timedelta(seconds=delay),
    )


def _retry_detail(outcome: Retry) -> str:
    if outcome.relay_fault:
        return "held: the relay refused our session or sender, not the recipient"
    return "temporary failure"


def handed_back(delivery_id: int, attempts: int, not_before: datetime | None = None) -> Write:
    """Never handed to the relay: back to where it was, to be claimed again."""
    status = DeliveryStatus.RETRYING if attempts else DeliveryStatus.PENDING
    return Write(delivery_id, status, not_before=not_before)


def suppressed(delivery_id: int, reason: str) -> Write:
    return Write(delivery_id, DeliveryStatus.SUPPRESSED, detail=reason)


def cancelled(delivery_id: int) -> Write:
    return Write(delivery_id, DeliveryStatus.CANCELLED, detail="issue cancelled")


def unsendable(delivery_id: int, reason: str) -> Write:
    """A message that can never be built for this recipient (e.g. a name no header can
    carry): failed once, with the reason, never retried."""
    return Write(
        delivery_id, DeliveryStatus.FAILED, detail=clean_reply(f"cannot be composed: {reason}")
    )


def interrupted(delivery_id: int, now: datetime, policy: RetryPolicy, attempts: int) -> Write:
    """Stopped while its SMTP transaction was under way: whether the relay took it is
    unknown, so it is tried again later (a possible duplicate, with the same Message-ID)."""
    delay = retry_delay(attempts + 1, policy.tiers)
    return Write(
        delivery_id,
        DeliveryStatus.RETRYING,
        True,
        detail="interrupted during the SMTP transaction at shutdown",
        not_before=now + timedelta(seconds=delay),
    )
