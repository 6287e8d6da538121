"""One chunk of an issue's deliveries, claimed by this worker, sent and recorded:

    ③ decide (consent read with the claim) ─► throttle ─► ④ personalize
        ─► pipeline (⑤ compose, ⑥ sign, relay, ⑦ classify) ─► recorder (a batch at a time)

Every row of the chunk ends with one write: its outcome, a suppression or cancellation
decided at the last moment, or a hand-back when it was never tried. A row that can never be
composed fails once, with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from mailer.adapters.deliveries import ClaimedDelivery, Deliveries
from mailer.adapters.issues import ActiveIssue
from mailer.adapters.throttle import Throttle
from mailer.core.audience import MailingList, newsletter_locale, newsletter_message_id
from mailer.core.consent import Suppress, decide_newsletter
from mailer.core.deliveries import (
    DeliveryStatus,
    RetryPolicy,
    Write,
    cancelled,
    handed_back,
    interrupted,
    suppressed,
    unsendable,
)
from mailer.core.messages import Draft, ListHeaders, Mailbox
from mailer.core.outcomes import Retry, Sent
from mailer.core.rendering import PreparedIssue
from mailer.core.tokens import Subscription, TokenKeys, unsubscribe_token
from mailer.errors import InvalidJob, ShuttingDown, Withdrawn
from mailer.metrics import Metrics
from mailer.worker.pipeline import Attempts
from mailer.worker.recording import Recorder
from mailer.worker.signals import Signals

log = logging.getLogger(__name__)
UNEXPECTED_ERROR_DELAY = 60.0  # seconds before a row that hit a bug is tried again
LAST_WRITE_AT_SHUTDOWN = 5.0  # seconds to record what a cancelled chunk knows


@dataclass
class _Chunk:
    """A chunk in hand: its rows, where it stands, and how the domains answered."""

    issue: ActiveIssue
    mailing_list: MailingList
    prepared: PreparedIssue
    rows: list[ClaimedDelivery]
    holder: UUID
    recorder: Recorder
    in_flight: dict[int, ClaimedDelivery] = field(default_factory=dict)
    deferred: set[str] = field(default_factory=set)
    accepted: set[str] = field(default_factory=set)


class ChunkRunner:
    def __init__(
        self,
        *,
        deliveries: Deliveries,
        throttle: Throttle,
        attempts: Attempts,
        signals: Signals,
        token_keys: TokenKeys,
        public_url: str,
        default_domain_rate: float,
        policy: RetryPolicy,
        metrics: Metrics,
        clock: Callable[[], datetime],
        feedback_sender: str = "mailer",
    ) -> None:
        self._feedback_sender = feedback_sender
        self._deliveries = deliveries
        self._throttle = throttle
        self._attempts = attempts
        self._signals = signals
        self._token_keys = token_keys
        self._public_url = public_url
        self._default_domain_rate = default_domain_rate
        self._policy = policy
        self._metrics = metrics
        self._clock = clock
        self._holders: set[UUID] = set()
        self._recorders: set[Recorder] = set()

    def holders(self) -> list[UUID]:
        """Throttle slot holders in use now, whose leases the heartbeat renews."""
        return list(self._holders)

    def owed(self) -> list[int]:
        """Deliveries whose outcome is known but not yet written."""
        return [i for recorder in self._recorders for i in recorder.owed]

    async def run(
        self,
        issue: ActiveIssue,
        mailing_list: MailingList,
        prepared: PreparedIssue,
        chunk: list[ClaimedDelivery],
    ) -> list[UUID]:
        """Send and record the chunk; returns the issues it finished."""
        holder = uuid4()
        self._holders.add(holder)
        finished: list[UUID] = []

        addresses = {row.id: row.email for row in chunk if row.email is not None}

        async def record(writes: Sequence[Write]) -> set[int]:
            recorded = await self._deliveries.record(writes, addresses)
            finished.extend(recorded.finished_issues)
            self._count(writes, recorded.ids)
            return recorded.ids

        recorder = Recorder(record)
        self._recorders.add(recorder)
        state = _Chunk(issue, mailing_list, prepared, chunk, holder, recorder)
        try:
            try:
                await self._send(state)
            except asyncio.CancelledError:
                await self._cut_short(state)
                raise
            except Exception:  # before anything was sent (e.g. the throttle): all go back
                for row in chunk:
                    if row.id not in recorder.decided:
                        recorder.add(handed_back(row.id, row.attempts), reserved=False)
                await recorder.close()
                raise
            try:
                await recorder.close()
            except asyncio.CancelledError:
                await recorder.abandon()
                raise
            await self._throttle.release(
                holder, sorted(state.deferred), sorted(state.accepted), self._default_domain_rate
            )
        finally:
            self._holders.discard(holder)
            if not recorder.owed:
                self._recorders.discard(recorder)
        return finished

    async def _cut_short(self, chunk: _Chunk) -> None:
        """Stopped mid-chunk (SIGTERM past the drain timeout): write what is known, and
        what was under way at the relay as tried (it may have arrived). What never started
        stays claimed, for the shutdown to hand back."""
        now = self._clock()
        for row in chunk.in_flight.values():
            chunk.recorder.add(interrupted(row.id, now, self._policy, row.attempts), reserved=False)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(chunk.recorder.close(), LAST_WRITE_AT_SHUTDOWN)
        await chunk.recorder.abandon()

    async def _send(self, chunk: _Chunk) -> None:
        recorder = chunk.recorder
        ready: list[ClaimedDelivery] = []
        for row in chunk.rows:
            decision = (
                decide_newsletter(row.subscription, row.suppression)
                if row.subscriber_id is not None
                else Suppress("erased")
            )
            if isinstance(decision, Suppress):
                recorder.add(suppressed(row.id, decision.reason), reserved=False)
            else:
                ready.append(row)
        grants = await self._throttle.take(chunk.holder, Counter(_domain(row) for row in ready))
        allowed = {domain: grant.messages for domain, grant in grants.items()}
        lanes = {
            domain: asyncio.Semaphore(grant.lanes)
            for domain, grant in grants.items()
            if grant.lanes is not None
        }
        later = self._clock() + timedelta(seconds=1)
        to_send = []
        for row in ready:
            domain = _domain(row)
            if allowed.get(domain, 0) > 0:
                allowed[domain] -= 1
                to_send.append(row)
            else:  # over a rate or concurrency limit for now: back in a moment
                recorder.add(handed_back(row.id, row.attempts, later), reserved=False)

        async def one(row: ClaimedDelivery) -> None:
            async with lanes.get(_domain(row)) or contextlib.nullcontext():
                await recorder.reserve()
                if recorder.claim_lost:  # if the row is still ours, it goes back to the pool
                    recorder.release()
                    recorder.add(handed_back(row.id, row.attempts), reserved=False)
                    return
                chunk.in_flight[row.id] = row
                try:
                    write = await self._one(chunk, row)
                except asyncio.CancelledError:
                    raise  # stays in flight: the relay may have it
                except BaseException:
                    chunk.in_flight.pop(row.id, None)
                    recorder.release()  # never handed to the relay
                    raise
                chunk.in_flight.pop(row.id, None)
                recorder.add(write, reserved=True)

        results = await asyncio.gather(*(one(row) for row in to_send), return_exceptions=True)
        for row, result in zip(to_send, results, strict=True):
            if isinstance(result, BaseException):
                recorder.add(self._unfinished(row, result), reserved=False)

    def _unfinished(self, row: ClaimedDelivery, error: BaseException) -> Write:
        """The write for a row whose send raised before reaching the relay."""
        if isinstance(error, ShuttingDown):
            return handed_back(row.id, row.attempts)
        if isinstance(error, InvalidJob | ValueError):
            log.error("newsletter delivery %d cannot be composed: %s", row.id, error)
            return unsendable(row.id, str(error))
        log.error("newsletter delivery %d: unexpected error", row.id, exc_info=error)
        return handed_back(
            row.id, row.attempts, self._clock() + timedelta(seconds=UNEXPECTED_ERROR_DELAY)
        )

    async def _one(self, chunk: _Chunk, row: ClaimedDelivery) -> Write:
        issue, mailing_list = chunk.issue, chunk.mailing_list
        assert row.subscriber_id is not None
        assert row.email is not None
        skipped = self._skipped(issue, mailing_list, row)
        if skipped is not None:
            return skipped
        token = unsubscribe_token(
            self._token_keys, Subscription(row.subscriber_id, mailing_list.id)
        )
        url = f"{self._public_url}/u/{token}"
        locale = newsletter_locale(row.locale, mailing_list)
        draft = Draft(
            sender=mailing_list.sender,
            to=Mailbox(row.email, row.name),
            message_id=newsletter_message_id(issue.id, row.subscriber_id, mailing_list),
            date=self._clock(),
            content=chunk.prepared.personalize(locale, row.name, url),
            list_headers=ListHeaders(
                mailing_list.list_id(),
                url,
                feedback_id=(
                    f"{issue.id.hex}:{mailing_list.slug}:newsletter:{self._feedback_sender}"
                ),
            ),
        )
        try:
            write, outcome = await self._attempts.attempt(
                row.id,
                draft,
                attempts_before=row.attempts,
                first_seen=row.created_at,
                still_wanted=lambda: self._skipped(issue, mailing_list, row) is None,
            )
        except Withdrawn:
            withdrawn = self._skipped(issue, mailing_list, row)
            assert withdrawn is not None
            return withdrawn
        if isinstance(outcome, Sent):
            chunk.accepted.add(_domain(row))
        elif isinstance(outcome, Retry) and outcome.deferred:
            chunk.deferred.add(_domain(row))
        return write

    def _skipped(
        self, issue: ActiveIssue, mailing_list: MailingList, row: ClaimedDelivery
    ) -> Write | None:
        """What became of a message that must not go after all, decided at the last moment."""
        halted = self._signals.halted(issue.id)
        if halted == "cancelled":
            return cancelled(row.id)
        if halted == "paused":
            return handed_back(row.id, row.attempts)
        assert row.subscriber_id is not None
        if self._signals.revoked(row.subscriber_id, mailing_list.id):
            return suppressed(row.id, "unsubscribed")
        return None

    def _count(self, writes: Sequence[Write], recorded: set[int]) -> None:
        for write in writes:
            if write.delivery_id in recorded and write.status in _METERED:
                self._metrics.deliveries.labels("newsletter", str(write.status)).inc()


# What the deliveries counter counts of a newsletter's writes: outcomes of sending, and
# retries (a cancelled or handed-back delivery was not sent).
_METERED = frozenset(
    {
        DeliveryStatus.SENT,
        DeliveryStatus.CAPTURED,
        DeliveryStatus.FAILED,
        DeliveryStatus.RETRYING,
        DeliveryStatus.SUPPRESSED,
    }
)


def _domain(row: ClaimedDelivery) -> str:
    assert row.email is not None
    return row.email.rpartition("@")[2].lower()
