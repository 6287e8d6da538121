"""An issue's progress, rate and ETA from ledger facts, and nothing else.

The rate is what the ledger recorded as sent in a recent window, divided by the part of that
window the issue was sending; it is never extrapolated from what a viewer happened to see
(a watcher that starts mid-issue sees thousands of messages appear at once). When nothing
has been sent for a while, or no worker process is alive, the issue is said to be stalled
and no rate or ETA is given: a stale rate would promise what is not happening.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from mailer.core.deliveries import OUTCOMES, READING_ORDER, UNFINISHED, DeliveryStatus
from mailer.core.issues import IssueState
from mailer.core.times import duration

RATE_WINDOW = 60.0  # seconds of the ledger the rate is measured over
STALL_AFTER = 60.0  # seconds without a send before an issue sending counts as stalled


def counted(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """Every status in the order operators read them, each with its count (0 if none)."""
    return [(status, counts.get(status, 0)) for status in READING_ORDER]


def left(counts: Mapping[str, int]) -> int:
    """Deliveries not yet at an outcome."""
    return sum(counts.get(status, 0) for status in UNFINISHED)


@dataclass(frozen=True, slots=True)
class LedgerFacts:
    """What the ledger says of one issue at `measured_at` (the database's clock)."""

    state: IssueState
    total: int | None
    counts: Mapping[str, int]
    measured_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    sent_in_window: int  # sent or captured within RATE_WINDOW before measured_at
    last_sent_at: datetime | None
    next_retry_at: datetime | None  # the earliest retry waiting, if any
    workers_alive: int | None  # None: not known


@dataclass(frozen=True, slots=True)
class Estimate:
    done: int
    remaining: int
    rate: float | None  # messages per second, None when no honest rate can be given
    eta: float | None  # seconds
    span: float | None  # seconds the rate was measured over
    stalled: str | None  # why nothing moves, when it does not
    waiting: str | None  # nothing to send until a retry is due: not a stall

    @property
    def fraction(self) -> float:
        whole = self.done + self.remaining
        return self.done / whole if whole else 1.0


def _seconds(later: datetime, earlier: datetime) -> float:
    return max(0.0, (later - earlier).total_seconds())


def estimate(facts: LedgerFacts) -> Estimate:
    counts = facts.counts
    done = sum(counts.get(status, 0) for status in OUTCOMES)
    remaining = left(counts)
    if facts.state != "sending" or remaining == 0:
        return Estimate(done, remaining, None, None, None, None, None)
    now = facts.measured_at
    last = facts.last_sent_at or facts.started_at
    quiet = _seconds(now, last) if last is not None else 0.0
    if facts.workers_alive == 0:
        stalled = "stalled: no worker process is alive"
        if facts.last_sent_at is not None:
            stalled += f"; the last send was {duration(quiet)} ago"
        return Estimate(done, remaining, None, None, None, stalled, None)
    if (
        counts.get(DeliveryStatus.PENDING, 0) == 0
        and counts.get(DeliveryStatus.SENDING, 0) == 0
        and facts.next_retry_at is not None
        and facts.next_retry_at > now
    ):
        waiting = (
            f"waiting: {counts.get(DeliveryStatus.RETRYING, 0)} to retry, the next in "
            f"{duration(_seconds(facts.next_retry_at, now))}"
        )
        return Estimate(done, remaining, None, None, None, None, waiting)
    if quiet >= STALL_AFTER:
        stalled = f"stalled: no worker has sent anything for {duration(quiet)}"
        return Estimate(done, remaining, None, None, None, stalled, None)
    # The part of the window the issue was sending: a second at least, so that the first
    # messages of an issue do not make a rate of thousands per second.
    span = RATE_WINDOW
    if facts.started_at is not None:
        span = min(span, _seconds(now, facts.started_at))
    span = max(span, 1.0)
    rate = facts.sent_in_window / span
    eta = remaining / rate if rate > 0 else None
    return Estimate(done, remaining, rate, eta, span, None, None)


def describe(estimate: Estimate) -> str:
    """One line: the rate and ETA, or why there are none."""
    if estimate.stalled:
        return estimate.stalled
    if estimate.waiting:
        return estimate.waiting
    if estimate.rate is None or estimate.span is None:
        return ""
    over = "minute" if estimate.span >= RATE_WINDOW else duration(estimate.span)
    eta = duration(estimate.eta) if estimate.eta is not None else "unknown"
    return f"rate {estimate.rate:,.1f}/s over the last {over}, ETA {eta}"
