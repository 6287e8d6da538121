"""Bounce reports, from the receiver's commit to what they change:

    stored report ─► classify (core.bounces) ─► check it speaks of its delivery (core.bounce_rules)
        ─► hard: bounced + suppressed for everything │ soft: bounced + a point for the day,
           newsletters suppressed past the threshold │ policy: bounced, counted per domain,
           alerted │ complaint: unsubscribed from every list, flagged │ else nothing
        ─► the report marked classified, in the same transaction

Classifying runs in processes of mailer's own (mailer/worker/classifiers.py), one report
each at a time, within `[bounces] classify_timeout`: a hostile report costs one of them at
most that long, ends `unparseable` with the reason, and never stalls the event loop.

A report is classified once: it is claimed (for a while, and counted) before it is read, and
marked classified in the transaction that applies it; a second pass finds it classified or
claimed and does nothing. Reports whose classification was cut off (a stop, a crash, the
database away) are picked up again by the sweep once their claim lapses, at most
MAX_ATTEMPTS times in all; the sweep also applies the retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

import asyncpg

from mailer.adapters.bounces import BounceReports, Classification
from mailer.adapters.inbound import BounceReceiver, SourceLimiter
from mailer.config import BouncesSettings, listen_address
from mailer.core.addresses import address_ref
from mailer.core.bounce_rules import Effect, effect_of, not_bounced
from mailer.core.bounces.kinds import Kind, Report
from mailer.core.bounces.soft_bounces import soft_bounce_decision
from mailer.core.deliveries import clean_reply
from mailer.core.return_paths import ReturnPathKeys
from mailer.errors import TemporaryFailure
from mailer.metrics import Metrics
from mailer.worker.classifiers import KEPT, ClassifierPool, ClassifierStopped

log = logging.getLogger(__name__)
SWEEP_INTERVAL = 300.0
MAX_ATTEMPTS = 5  # classifications of one report started, and cut off, before it is given up
STOP_GRACE = 1.0  # seconds the classifications under way get at a stop before they are cut off


class Classifier(Protocol):
    processes: int  # reports it classifies at once
    timeout: float  # seconds one report may take

    @property
    def closed(self) -> bool: ...

    async def classify(self, raw: bytes) -> Report: ...


_DOMAIN = re.compile(r"[a-z0-9.-]{1,255}")


def _clean(text: str | None) -> str | None:
    """Words from a report, fit to store: valid Unicode, no control characters, bounded."""
    return clean_reply(text) or None if text is not None else None


@dataclass(frozen=True, slots=True)
class NotYet:
    """The report's delivery is still being sent: classify it a little later."""


NOT_YET_WAITS = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # then the sweep's turn


@dataclass(frozen=True, slots=True)
class SoftRule:
    threshold: int = 5
    window_days: int = 30
    expire_after_days: int = 90


class BounceProcessor:
    def __init__(
        self,
        *,
        reports: BounceReports,
        hash_key: bytes,
        soft: SoftRule,
        complaint_alert_rate: float,
        retention_days: int,
        metrics: Metrics,
        clock: Callable[[], datetime],
        classifier: Classifier,
    ) -> None:
        self._reports = reports
        self._classifier = classifier
        self._turns = asyncio.Semaphore(classifier.processes)
        # A claim outlasts the longest classification (a new process's start included).
        self._claim_seconds = 2 * classifier.timeout + 60
        self._hash_key = hash_key
        self._soft = soft
        self._complaint_alert_rate = complaint_alert_rate
        self._retention_days = retention_days
        self._metrics = metrics
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    def stored(self, report_id: int) -> None:
        """The receiver committed a report: classify it soon, off the SMTP session."""
        task = asyncio.create_task(self._classify_soon(report_id), name=f"bounce-{report_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _classify_soon(self, report_id: int) -> None:
        try:
            for wait in NOT_YET_WAITS:
                if not isinstance(await self.classify(report_id), NotYet):
                    return
                await asyncio.sleep(wait)
        except TemporaryFailure as exc:
            log.warning(
                "bounce report %d not classified yet (the sweep retries): %s", report_id, exc
            )
        except ClassifierStopped:
            log.info("bounce report %d: cut off by the stop, classified after a start", report_id)
        except Exception as exc:
            await self._give_up(report_id, exc)

    async def classify(self, report_id: int) -> Effect | NotYet | None:
        """Classify and apply one stored report; None when it was done already (or another
        classification holds it), NotYet when its delivery's outcome is still being
        recorded. ClassifierStopped when the service stops first."""
        status = await self._reports.delivery_status(report_id)
        if status is None:
            return None
        if status == "sending":
            # A fast relay's DSN can arrive before the 250 that preceded it is recorded.
            return NotYet()
        async with self._turns:
            if self._classifier.closed:  # stopping: left for the next start, not counted
                raise ClassifierStopped
            claim = await self._reports.claim(report_id, seconds=self._claim_seconds)
            if claim is None:
                return None
            if claim.attempts > MAX_ATTEMPTS:
                report = Report(
                    Kind.UNPARSEABLE,
                    f"its classification was started {claim.attempts - 1} times and never"
                    f" finished (the service stopped or crashed meanwhile): given up; {KEPT}",
                    "none",
                )
            else:
                try:
                    report = await self._classifier.classify(claim.raw)
                except ClassifierStopped:
                    # Cut off by the stop: free for the next start, the attempt still counted.
                    await self._reports.release(report_id, attempt_counts=True)
                    raise
        if report.reason.endswith(KEPT):  # over its time limit, or its process died
            log.warning("bounce report %d is unparseable: %s", report_id, report.reason)
        return await self._record(report_id, report)

    async def _record(self, report_id: int, report: Report) -> Effect | NotYet | None:
        """Apply a classified report, and mark it classified, in one transaction."""
        async with self._reports.classifying(report_id) as job:
            if job is None:
                return None
            pending = job.pending
            resent = pending.delivery_status == "sending"  # being sent again since the claim
            if not resent:
                effect, outcome = await self._effect(job, report)
                await job.done(
                    kind=str(effect.kind),
                    reason=clean_reply(
                        report.reason if effect.applies else f"{report.reason}; {effect.reason}"
                    ),
                    status=_clean(effect.status),
                    diagnostic=_clean(effect.diagnostic),
                    domain=effect.domain
                    if effect.domain and _DOMAIN.fullmatch(effect.domain)
                    else None,
                    outcome=clean_reply(outcome),
                    evidence=_clean(effect.evidence),
                )
        if resent:
            await self._reports.release(report_id)
            return NotYet()
        if job.unsubscribed:  # a complaint's unsubscribe, counted as every unsubscribe is
            self._metrics.unsubscribes.labels("complaint").inc(job.unsubscribed)
        self._after(pending.delivery_id, pending.job_id, pending.recipient_key, effect, outcome)
        if effect.applies and effect.kind is Kind.COMPLAINT and pending.job_id is not None:
            await self._complaint_rate(pending.job_id)
        return effect

    async def _effect(self, job: Classification, report: Report) -> tuple[Effect, str]:
        """What the report changes for its delivery (written through `job`), and the words
        that say so."""
        pending = job.pending
        if pending.recipient_key is None or pending.delivery_id is None:
            if pending.delivery_id is None:
                outcome = "nothing: mail to postmaster@ naming no delivery of ours, kept"
            else:
                outcome = "nothing: its delivery no longer exists"
            return Effect(
                report.kind, report.reason, applies=False, evidence=report.evidence
            ), outcome
        effect = effect_of(
            report,
            delivery_id=pending.delivery_id,
            recipient_key=pending.recipient_key,
            hash_key=self._hash_key,
        )
        return effect, await self._apply(job, effect) if effect.applies else effect.reason

    async def _give_up(self, report_id: int, error: Exception) -> None:
        """A report whose classification raised (a bug, or input nothing expected): kept, and
        marked unparseable with the reason, so it is not tried again on every sweep."""
        log.error("bounce report %d: classification failed", report_id, exc_info=error)
        with contextlib.suppress(TemporaryFailure):
            await self._reports.give_up(report_id, f"classification failed: {type(error).__name__}")

    async def _apply(self, job: Classification, effect: Effect) -> str:
        kind = effect.kind
        if kind is Kind.COMPLAINT:
            await job.complained(clean_reply(effect.reason))
            left = await job.unsubscribe_everywhere()
            return f"complaint flagged; unsubscribed from {left} list(s)"
        if not effect.bounces:
            return "nothing"
        assert kind in (Kind.HARD, Kind.SOFT, Kind.POLICY)
        unchanged = await job.bounce(
            kind.value, _clean(effect.status), _clean(effect.diagnostic), clean_reply(effect.reason)
        )
        if unchanged is not None:
            return not_bounced(unchanged)
        if kind is Kind.HARD:
            await job.suppress_hard(effect.reason)
            return "bounced; address suppressed for everything"
        if kind is Kind.POLICY:
            return f"bounced; counted for {effect.domain or 'an unknown domain'}, not the recipient"
        return await self._soft_point(job)

    async def _soft_point(self, job: Classification) -> str:
        today = self._clock().date()
        rule = self._soft
        days = await job.soft_point(today, keep_days=rule.window_days + rule.expire_after_days)
        decision = soft_bounce_decision(
            days,
            today,
            threshold=rule.threshold,
            window_days=rule.window_days,
            expire_after_days=rule.expire_after_days,
        )
        if decision.suppressed and decision.until is not None:
            await job.suppress_soft(decision.until, decision.reason)
            return f"bounced; newsletters suppressed until {decision.until}: {decision.reason}"
        return f"bounced; {decision.reason}"

    def _after(
        self,
        delivery_id: int | None,
        job_id: object,
        recipient_key: bytes | None,
        effect: Effect,
        outcome: str,
    ) -> None:
        ref = address_ref(recipient_key) if recipient_key else "-"
        kind = str(effect.kind) if effect.applies else "mismatched"
        self._metrics.bounce_reports.labels(kind).inc()
        log.info(
            "bounce report kind=%s delivery=%s rcpt=%s outcome=%r",
            kind,
            delivery_id if delivery_id is not None else "-",
            ref,
            outcome,
        )
        if not effect.applies:
            return
        if effect.kind is Kind.COMPLAINT:
            self._metrics.complaints.inc()
            log.warning("complaint from rcpt=%s about job=%s: flagged for operators", ref, job_id)
        if effect.kind is Kind.POLICY:
            self._metrics.bounce_alerts.labels("policy").inc()
            log.warning(
                "alert: policy bounce from %s (our sender or content refused, not the"
                " recipient): %s",
                effect.domain or "an unknown domain",
                effect.reason,
            )

    async def _complaint_rate(self, job_id: object) -> None:
        rate = await self._reports.complaint_rate(job_id)
        if rate is None:
            return
        complaints, total = rate
        if complaints / total > self._complaint_alert_rate:
            self._metrics.bounce_alerts.labels("complaint_rate").inc()
            log.error(
                "alert: issue %s has %d complaint(s) in %d deliveries (%.2f%%), over %.2f%%",
                job_id,
                complaints,
                total,
                100 * complaints / total,
                100 * self._complaint_alert_rate,
            )

    async def sweep(self) -> None:
        """Classify what was left unclassified, and apply the retention."""
        for report_id in await self._reports.unclassified():
            try:
                await self.classify(report_id)
            except (TemporaryFailure, ClassifierStopped):
                raise
            except Exception as exc:
                await self._give_up(report_id, exc)
        rule = self._soft
        emptied, lifted = await self._reports.sweep(
            retention_days=self._retention_days,
            keep_soft_days=rule.window_days + rule.expire_after_days,
        )
        if emptied or lifted:
            log.info("bounce retention: %d raw report(s) deleted, %d lifted", emptied, lifted)

    async def run_sweeps(self, stopping: asyncio.Event, interval: float = SWEEP_INTERVAL) -> None:
        while not stopping.is_set():
            try:
                await self.sweep()
            except ClassifierStopped:
                return
            except TemporaryFailure as exc:
                log.warning("bounce sweep postponed: %s", exc)
            except Exception:
                log.exception("bounce sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval)

    async def drain(self, seconds: float = 10.0) -> None:
        """Let the classifications under way finish (what is cut off, the sweep redoes)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=seconds)


def today_of(clock: Callable[[], datetime]) -> Callable[[], date]:
    return lambda: clock().date()


class BounceService:
    """The receiver and the classifier together, as `mailer run` and `mailer bounces serve`
    start them."""

    def __init__(
        self,
        settings: BouncesSettings,
        *,
        pool: asyncpg.Pool,
        keys: ReturnPathKeys,
        hash_key: bytes,
        metrics: Metrics,
        clock: Callable[[], datetime],
    ) -> None:
        assert settings.domain is not None
        reports = BounceReports(pool)
        self.classifiers = ClassifierPool(
            processes=settings.classify_processes, timeout=settings.classify_timeout
        )
        self.processor = BounceProcessor(
            reports=reports,
            hash_key=hash_key,
            soft=SoftRule(
                settings.soft_threshold, settings.soft_window_days, settings.soft_expire_days
            ),
            complaint_alert_rate=settings.complaint_alert_rate,
            retention_days=settings.retention_days,
            metrics=metrics,
            clock=clock,
            classifier=self.classifiers,
        )
        host, port = listen_address(settings.listen)

        async def store(peer: str, delivery_id: int | None, raw: bytes) -> int:
            return await reports.store(peer=peer, delivery_id=delivery_id, raw=raw)

        self.receiver = BounceReceiver(
            host=host,
            port=port,
            domain=settings.domain,
            keys=keys,
            max_age_days=settings.max_age_days,
            max_bytes=settings.max_report_bytes,
            limiter=SourceLimiter(settings.rate, settings.burst),
            store=store,
            on_stored=self.processor.stored,
            refused=lambda reason: metrics.bounce_refused.labels(reason).inc(),
            today=today_of(clock),
            feedback_local=settings.feedback_address,
            max_connections=settings.max_connections,
            max_session_seconds=settings.max_session_seconds,
        )
        self._stopping = asyncio.Event()
        self._sweeps: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.receiver.start()
        self._sweeps = asyncio.create_task(
            self.processor.run_sweeps(self._stopping), name="bounce-sweeps"
        )

    def readiness(self) -> dict[str, object]:
        receiver = self.receiver
        if receiver.listening:
            return {"ok": True, "detail": f"receiving on {receiver.host}:{receiver.port}"}
        return {"ok": False, "detail": "the bounce receiver is not listening"}

    async def stop(self) -> None:
        """Prompt whatever is being classified: what is still at it after STOP_GRACE is cut
        off (its process killed) and classified after the next start."""
        self._stopping.set()
        await self.receiver.stop()
        await self.processor.drain(STOP_GRACE)
        await self.classifiers.close()
        await self.processor.drain()
        if self._sweeps is not None:
            await self._sweeps
            self._sweeps = None
