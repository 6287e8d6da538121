"""Newsletters: an issue job is checked, rendered for every locale and stored (then acked at
once); the dispatcher in every worker process starts issues when due and hands their
deliveries, a chunk at a time, to the chunk runner (mailer/worker/chunks.py).

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
from collections.abc import Mapping
from uuid import UUID

from mailer.adapters.deliveries import Deliveries
from mailer.adapters.issues import ActiveIssue, Issues
from mailer.core.audience import MailingList
from mailer.core.jobs import NewsletterJob, decode, payload_digest
from mailer.core.locales import LOCALES
from mailer.core.rendering import PreparedIssue, Renderer, prepare_issue
from mailer.errors import InvalidJob, ShuttingDown, TemporaryFailure
from mailer.worker.chunks import ChunkRunner
from mailer.worker.signals import Signals
from mailer.worker.verdicts import Done, Verdict

log = logging.getLogger(__name__)


def prepare(job: NewsletterJob, mailing_list: MailingList, renderer: Renderer) -> PreparedIssue:
    """Every locale the issue can go out in, rendered; InvalidJob if any cannot be."""
    lacking = job.lacking(mailing_list.default_locale)
    if lacking is not None:
        raise InvalidJob(
            f"{lacking}: needs the list's default locale {mailing_list.default_locale!r}"
        )
    contexts = {
        locale: {
            **job.data_for(locale, mailing_list.default_locale),
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


class Dispatcher:
    """Schedules the sending of issues in progress; several loops per process, each with
    one chunk in hand at a time."""

    def __init__(
        self,
        *,
        issues: Issues,
        deliveries: Deliveries,
        runner: ChunkRunner,
        signals: Signals,
        renderer: Renderer,
        lists: Mapping[int, MailingList],
        chunk_size: int,
        rate: float,
        poll_interval: float,
        lease: float,
    ) -> None:
        self._issues = issues
        self._deliveries = deliveries
        self._runner = runner
        self._signals = signals
        self._renderer = renderer
        self._lists = lists
        # About a second's worth of mail per chunk: the consent read with the claim stays
        # fresh, and pausing takes effect quickly.
        self._chunk_size = min(chunk_size, max(1, int(rate))) if rate > 0 else chunk_size
        self._poll_interval = poll_interval
        self._lease = lease
        self._prepared: dict[UUID, PreparedIssue] = {}
        self._stopping = asyncio.Event()
        self._last_reclaim = 0.0

    async def run(self) -> None:
        wake = self._signals.wake
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
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self._poll_interval)

    def stop(self) -> None:
        self._stopping.set()
        self._signals.wake.set()

    async def _step(self) -> bool:
        for issue_id, total in await self._issues.start_due():
            log.info("issue %s started: %d deliveries", issue_id, total)
        active = await self._issues.sending()
        self._forget(active)
        await self._reclaim(active)
        for issue in active:
            if self._signals.halted(issue.id) or self._stopping.is_set():
                continue
            try:
                mailing_list, prepared = await self._issue(issue)
            except InvalidJob as exc:  # e.g. a template changed since the issue was accepted
                log.error("issue %s cannot be rendered, pausing it: %s", issue.id, exc.reason)
                await self._issues.set_state(issue.id, "pause", f"cannot be rendered: {exc.reason}")
                continue
            chunk = await self._deliveries.claim_chunk(issue.id, issue.list_id, self._chunk_size)
            if chunk:
                for issue_id in await self._runner.run(issue, mailing_list, prepared, chunk):
                    log.info("issue %s done", issue_id)
                return True
        if active:
            for issue_id in await self._issues.complete([issue.id for issue in active]):
                log.info("issue %s done", issue_id)
        return False

    def _forget(self, active: list[ActiveIssue]) -> None:
        """Drop what is kept about issues no longer sending."""
        keep = {issue.id for issue in active}
        self._prepared = {k: v for k, v in self._prepared.items() if k in keep}
        self._signals.forget_old()

    async def _reclaim(self, active: list[ActiveIssue]) -> None:
        now = time.monotonic()
        if active and now - self._last_reclaim > self._lease / 2:
            self._last_reclaim = now
            reclaimed = await self._deliveries.reclaim_expired([issue.id for issue in active])
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
