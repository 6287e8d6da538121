"""Newsletters: an issue job is checked, rendered for every locale and stored (then acked at
once); dispatchers in every worker process send its deliveries chunk by chunk:

    claim chunk (③ consent read with it) ─► ③ decide ─► throttle ─► ④ personalize
        ─► ⑤ compose ─► ⑥ sign ─► relay ─► ⑦ classify ─► record (a batch at a time)

An opt-out that lands while a chunk is in hand is honoured: the database marks the person's
waiting deliveries suppressed, and the notification it sends makes every dispatcher drop
that person's messages not yet handed to the relay. Pause and cancel reach dispatchers the
same way, so they take effect within a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from mailer.adapters.issues import ActiveIssue, ClaimedDelivery, Issues, Outcome
from mailer.adapters.throttle import Throttle
from mailer.core.audience import (
    MailingList,
    newsletter_locale,
    newsletter_message_id,
)
from mailer.core.consent import Suppress, decide_newsletter
from mailer.core.jobs import NewsletterJob, decode, payload_digest
from mailer.core.messages import Draft, ListHeaders, Mailbox
from mailer.core.outcomes import Outcome as CoreOutcome
from mailer.core.outcomes import Retry, retry_delay, settle
from mailer.core.rendering import LOCALES, PreparedIssue, Renderer, prepare_issue
from mailer.core.tokens import Subscription, TokenKeys, unsubscribe_token
from mailer.errors import InvalidJob, ShuttingDown, TemporaryFailure, Withdrawn
from mailer.metrics import Metrics
from mailer.worker.recording import Recorder
from mailer.worker.sending import Sender
from mailer.worker.verdicts import Done, RetryPolicy, Verdict

log = logging.getLogger(__name__)
REVOCATION_MEMORY = 600.0  # seconds an opt-out notification is remembered


def prepare(job: NewsletterJob, mailing_list: MailingList, renderer: Renderer) -> PreparedIssue:
    """Every locale the issue can go out in, rendered; InvalidJob if any cannot be."""
    if isinstance(job.subject, dict) and mailing_list.default_locale not in job.subject:
        raise InvalidJob(
            f"subject: needs the list's default locale {mailing_list.default_locale!r}"
        )
    contexts = {
        locale: {
            **job.data,
            "subject": job.subject_for(locale, mailing_list.default_locale),
            "list_name": mailing_list.name,
        }
        for locale in LOCALES
    }
    return prepare_issue(renderer, job.template, contexts)


class IssueIntake:
    """The mailer.newsletters consumer: a valid issue is stored, scheduled, and acked."""

    def __init__(
        self,
        *,
        issues: Issues,
        lists: Mapping[str, MailingList],
        renderer: Renderer,
        max_attachment_bytes: int,
    ) -> None:
        self._issues = issues
        self._lists = lists
        self._renderer = renderer
        self._max_attachment_bytes = max_attachment_bytes

    async def accept(self, body: bytes) -> Verdict:
        job = decode(body, max_attachment_bytes=self._max_attachment_bytes)
        if not isinstance(job, NewsletterJob):
            raise InvalidJob(f"kind: a {job.kind} job does not belong on the newsletters queue")
        mailing_list = self._lists.get(job.list)
        if mailing_list is None:
            raise InvalidJob(f"list: no list {job.list!r} is configured")
        prepare(job, mailing_list, self._renderer)
        result = await self._issues.accept(
            job.id, payload_digest(job), mailing_list.id, job.model_dump(mode="json"), job.send_at
        )
        if result == "conflict":
            raise InvalidJob(f"id: {job.id} was already used for a different payload")
        log.info("issue %s %s for list %s", job.id, result, job.list)
        return Done()


@dataclass(frozen=True, slots=True)
class ChunkEnd:
    """What a chunk records when it ends."""

    outcomes: list[Outcome]
    slot_holder: UUID
    deferred: list[str]
    accepted: list[str]


class Dispatcher:
    """Sends the deliveries of issues in progress; several loops per process."""

    def __init__(
        self,
        *,
        issues: Issues,
        throttle: Throttle,
        sender: Sender,
        renderer: Renderer,
        lists: Mapping[int, MailingList],
        token_keys: TokenKeys,
        public_url: str,
        chunk_size: int,
        rate: float,
        default_domain_rate: float,
        poll_interval: float,
        lease: float,
        retry: RetryPolicy,
        metrics: Metrics,
        clock: Callable[[], datetime],
    ) -> None:
        self._issues = issues
        self._throttle = throttle
        self._sender = sender
        self._renderer = renderer
        self._lists = lists
        self._token_keys = token_keys
        self._public_url = public_url
        # About a second's worth of mail per chunk: the consent read with the claim stays
        # fresh, and pausing takes effect quickly.
        self._chunk_size = min(chunk_size, max(1, int(rate))) if rate > 0 else chunk_size
        self._default_domain_rate = default_domain_rate
        self._poll_interval = poll_interval
        self._lease = lease
        self._retry = retry
        self._metrics = metrics
        self._clock = clock
        self._prepared: dict[UUID, PreparedIssue] = {}
        self._revoked: dict[tuple[int, str], float] = {}
        self._halted: dict[UUID, str] = {}
        self._halted_at: dict[UUID, float] = {}
        self._holders: set[UUID] = set()
        self._owed: list[ChunkEnd] = []
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._last_reclaim = 0.0

    # Notifications ----------------------------------------------------------------------

    def on_optout(self, payload: str) -> None:
        """`<subscriber>:<list id>` or `<subscriber>:*` (erased)."""
        subscriber, _, list_id = payload.partition(":")
        now = time.monotonic()
        self._revoked[(int(subscriber), list_id)] = now
        if len(self._revoked) > 10_000:
            cutoff = now - REVOCATION_MEMORY
            self._revoked = {k: t for k, t in self._revoked.items() if t > cutoff}

    def on_issue(self, payload: str) -> None:
        """`<issue>:<state>`."""
        issue, _, state = payload.partition(":")
        issue_id = UUID(issue)
        if state in ("paused", "cancelled"):
            self._halted[issue_id] = state
            self._halted_at[issue_id] = time.monotonic()
        else:
            self._halted.pop(issue_id, None)
        self._wake.set()

    def _forget(self, active: list[ActiveIssue]) -> None:
        """Drop what is kept about issues no longer sending, once no chunk can need it."""
        keep = {issue.id for issue in active}
        self._prepared = {k: v for k, v in self._prepared.items() if k in keep}
        cutoff = time.monotonic() - REVOCATION_MEMORY
        for issue_id in [i for i, at in self._halted_at.items() if at < cutoff]:
            self._halted.pop(issue_id, None)
            self._halted_at.pop(issue_id, None)

    def on_reconnect(self) -> None:
        self._wake.set()

    def holders(self) -> list[UUID]:
        """Throttle slot holders in use now, whose leases the heartbeat renews."""
        return list(self._holders)

    # The loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                busy = await self._step()
            except ShuttingDown:
                break
            except TemporaryFailure as exc:
                log.warning("newsletter dispatch waits: %s", exc)
                busy = False
            except Exception:
                # A bug must not stop every issue.
                log.exception("newsletter dispatch: unexpected error")
                busy = False
            if not busy:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_interval)
        with contextlib.suppress(TemporaryFailure):  # still away: the claims lapse instead
            await self._record_owed()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def _step(self) -> bool:
        await self._record_owed()  # first: the reclaim below would hand those rows back
        for issue_id, total in await self._issues.start_due():
            log.info("issue %s started: %d deliveries", issue_id, total)
        active = await self._issues.sending()
        self._forget(active)
        await self._reclaim(active)
        for issue in active:
            if self._halted.get(issue.id):
                continue
            try:
                await self._issue(issue)
            except InvalidJob as exc:  # e.g. a template changed since the issue was accepted
                log.error("issue %s cannot be rendered, pausing it: %s", issue.id, exc.reason)
                await self._issues.set_state(issue.id, "pause")
                continue
            chunk = await self._issues.claim(issue, self._chunk_size)
            if chunk:
                await self._send_chunk(issue, chunk)
                return True
        if active:
            await self._issues.complete([issue.id for issue in active])
        return False

    async def _reclaim(self, active: list[ActiveIssue]) -> None:
        now = time.monotonic()
        if active and now - self._last_reclaim > self._lease / 2:
            self._last_reclaim = now
            reclaimed = await self._issues.reclaim_expired([issue.id for issue in active])
            if reclaimed:
                log.warning("took back %d deliveries from a worker that stopped", reclaimed)

    async def _issue(self, issue: ActiveIssue) -> tuple[MailingList, PreparedIssue]:
        """The issue rendered for every locale: once per process, kept while it sends."""
        mailing_list = self._lists.get(issue.list_id)
        if mailing_list is None:
            raise InvalidJob("its list is no longer in the configuration")
        prepared = self._prepared.get(issue.id)
        if prepared is None:
            job = NewsletterJob.model_validate(await self._issues.payload(issue.id))
            prepared = self._prepared[issue.id] = prepare(job, mailing_list, self._renderer)
        return mailing_list, prepared

    async def _send_chunk(self, issue: ActiveIssue, chunk: list[ClaimedDelivery]) -> None:
        holder = uuid4()
        self._holders.add(holder)
        recorder = Recorder(self._record)
        try:
            outcomes, deferred, accepted = await self._deliver(issue, chunk, holder, recorder)
        except Exception:  # before anything was sent: each send catches its own errors
            self._owed.append(ChunkEnd([_returned(row) for row in chunk], holder, [], []))
            raise
        finally:
            self._holders.discard(holder)
        rest = [outcome for outcome in outcomes if outcome.delivery_id not in recorder.recorded]
        self._owed.append(ChunkEnd(rest, holder, sorted(deferred), sorted(accepted)))
        await self._record_owed()

    async def _record_owed(self) -> None:
        """Record the ends of chunks, including any the database could not take when they
        ended: until they are, their rows stay claimed, so nobody sends them again."""
        while self._owed:
            end = self._owed.pop(0)
            try:
                finished = await self._issues.finish(
                    end.outcomes,
                    slot_holder=end.slot_holder,
                    deferred=end.deferred,
                    accepted=end.accepted,
                    default_rate=self._default_domain_rate,
                )
            except (TemporaryFailure, asyncio.CancelledError):
                self._owed.insert(0, end)
                raise
            except Exception:
                log.exception(
                    "%d outcomes could not be recorded; their rows stay claimed until this"
                    " process restarts",
                    len(end.outcomes),
                )
                continue
            self._count(end.outcomes)
            for issue_id in finished:
                log.info("issue %s done", issue_id)

    async def _record(self, outcomes: Sequence[Outcome]) -> None:
        await self._issues.record(outcomes)
        self._count(outcomes)

    def _count(self, outcomes: Sequence[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.status in ("sent", "failed", "retrying", "suppressed"):
                self._metrics.deliveries.labels("newsletter", outcome.status).inc()

    async def _deliver(
        self,
        issue: ActiveIssue,
        chunk: list[ClaimedDelivery],
        holder: UUID,
        recorder: Recorder,
    ) -> tuple[list[Outcome], set[str], set[str]]:
        """Outcomes for every row of the chunk, and the domains that deferred / accepted."""
        mailing_list, prepared = await self._issue(issue)
        outcomes: dict[int, Outcome] = {}
        ready: list[ClaimedDelivery] = []
        for row in chunk:
            decision = (
                decide_newsletter(row.subscription, row.suppression)
                if row.subscriber_id is not None
                else Suppress("erased")
            )
            if isinstance(decision, Suppress):
                outcomes[row.id] = Outcome(row.id, "suppressed", detail=decision.reason)
            else:
                ready.append(row)
        grants = await self._throttle.take(holder, Counter(_domain(row) for row in ready))
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
                outcomes[row.id] = _returned(row, not_before=later)

        async def one(row: ClaimedDelivery) -> tuple[Outcome, bool | None]:
            async with lanes.get(_domain(row)) or contextlib.nullcontext():
                await recorder.reserve()
                try:
                    result = await self._one(issue, mailing_list, prepared, row)
                except BaseException:
                    recorder.release()  # never handed to the relay
                    raise
            await recorder.add(result[0])
            return result

        results = await asyncio.gather(*(one(row) for row in to_send), return_exceptions=True)
        deferred: set[str] = set()
        accepted: set[str] = set()
        for row, result in zip(to_send, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, ShuttingDown):
                    log.error("newsletter delivery %d: unexpected error", row.id, exc_info=result)
                outcomes[row.id] = _returned(row)  # never handed to the relay
                continue
            outcome, pushback = result
            outcomes[row.id] = outcome
            if pushback is not None:
                (deferred if pushback else accepted).add(_domain(row))
        return [outcomes[row.id] for row in chunk], deferred, accepted

    async def _one(
        self,
        issue: ActiveIssue,
        mailing_list: MailingList,
        prepared: PreparedIssue,
        row: ClaimedDelivery,
    ) -> tuple[Outcome, bool | None]:
        """The outcome, and whether the domain pushed back (True), took it (False) or
        was not asked (None)."""
        assert row.subscriber_id is not None
        assert row.email is not None
        skipped = self._skipped(issue, mailing_list, row)
        if skipped is not None:
            return skipped, None
        token = unsubscribe_token(
            self._token_keys, Subscription(row.subscriber_id, mailing_list.id)
        )
        url = f"{self._public_url}/u/{token}"
        now = self._clock()
        locale = newsletter_locale(row.locale, mailing_list)
        draft = Draft(
            sender=mailing_list.sender,
            to=Mailbox(row.email, row.name),
            message_id=newsletter_message_id(issue.id, row.subscriber_id, mailing_list),
            date=now,
            content=prepared.personalize(locale, row.name, url),
            list_headers=ListHeaders(mailing_list.list_id(), url),
        )
        try:
            outcome = await self._sender.send(
                draft, now, still_wanted=lambda: self._skipped(issue, mailing_list, row) is None
            )
        except Withdrawn:
            withdrawn = self._skipped(issue, mailing_list, row)
            assert withdrawn is not None
            return withdrawn, None
        return self._settle(row, draft, outcome, now)

    def _skipped(
        self, issue: ActiveIssue, mailing_list: MailingList, row: ClaimedDelivery
    ) -> Outcome | None:
        """What became of a message that must not go after all, decided at the last moment."""
        halted = self._halted.get(issue.id)
        if halted == "cancelled":
            return Outcome(row.id, "cancelled", detail="issue cancelled")
        if halted == "paused":
            return _returned(row)
        assert row.subscriber_id is not None
        if self._is_revoked(row.subscriber_id, mailing_list.id):
            return Outcome(row.id, "suppressed", detail="unsubscribed")
        return None

    def _settle(
        self, row: ClaimedDelivery, draft: Draft, outcome: CoreOutcome, now: datetime
    ) -> tuple[Outcome, bool | None]:
        assert row.email is not None
        settled = settle(
            outcome,
            address=row.email,
            tried_for=(now - row.created_at).total_seconds(),
            give_up_after=self._retry.give_up_after,
        )
        retry_at = None
        if settled.status == "retrying":
            retry_at = now + timedelta(seconds=retry_delay(row.attempts + 1, self._retry.tiers))
        recorded = Outcome(
            row.id,
            settled.status,
            attempted=True,
            reply=settled.reply,
            message_id=draft.message_id if settled.status == "sent" else None,
            detail=settled.detail,
            not_before=retry_at,
            hard_bounce=settled.hard_bounce,
        )
        pushback: bool | None = None  # a failure, or a lost connection: nothing about the domain
        if settled.status == "sent":
            pushback = False
        elif settled.status == "retrying" and isinstance(outcome, Retry) and outcome.deferred:
            pushback = True
        return recorded, pushback

    def _is_revoked(self, subscriber_id: int, list_id: int) -> bool:
        return (subscriber_id, str(list_id)) in self._revoked or (
            subscriber_id,
            "*",
        ) in self._revoked


def _domain(row: ClaimedDelivery) -> str:
    assert row.email is not None
    return row.email.rpartition("@")[2].lower()


def _returned(row: ClaimedDelivery, not_before: datetime | None = None) -> Outcome:
    """Not attempted: back to where it was, to be claimed again."""
    return Outcome(row.id, "retrying" if row.attempts else "pending", not_before=not_before)
