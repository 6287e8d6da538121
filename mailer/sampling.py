"""The gauges /metrics shows of things outside this process, measured every few seconds:
the database and the broker, every mailer.* queue (ready, unacked, consumers), the jobs
parked, the worker processes, and the progress of active issues.
`mailer_metrics_sampled_timestamp_seconds{part}` says when each part was last measured."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import asyncpg
from prometheus_client import Gauge

from mailer.adapters import database, outbox
from mailer.adapters.broker import Broker
from mailer.adapters.database import unavailable_is_temporary
from mailer.adapters.dead_letters import origin_label
from mailer.adapters.issues import Issues
from mailer.adapters.parked import ParkedJobs
from mailer.adapters.queues import queue_states
from mailer.adapters.topology import ROUTES
from mailer.adapters.webhooks import WEBHOOK_STATES, endpoint_counts
from mailer.adapters.workers import Workers
from mailer.core.deliveries import READING_ORDER
from mailer.errors import MailerError, TemporaryFailure
from mailer.metrics import Metrics

log = logging.getLogger(__name__)
SAMPLE_INTERVAL = 10.0  # seconds
# Reading an issue's progress is one pass over its ledger rows (about 0.5 s for a million
# recipients, bench/progress.py): issues are read again only after 50 times as long as the
# last reading took, so that this costs the database at most 2% of one core per process.
ISSUE_READ_SHARE = 50


class _Series:
    """Label sets set in the last sample, so that those no longer true are removed."""

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        self._now: set[tuple[str, ...]] = set()
        self._before: set[tuple[str, ...]] = set()

    def set(self, labels: tuple[str, ...], value: float) -> None:
        self.gauge.labels(*labels).set(value)
        self._now.add(labels)

    def sweep(self) -> None:
        for labels in self._before - self._now:
            with contextlib.suppress(KeyError):
                self.gauge.remove(*labels)
        self._before, self._now = self._now, set()


class Sampler:
    def __init__(
        self,
        *,
        metrics: Metrics,
        pool: asyncpg.Pool,
        broker: Broker | None,
        queues: Sequence[str],
        interval: float = SAMPLE_INTERVAL,
        connect: Callable[[], Broker] | None = None,
    ) -> None:
        """`broker`: this process's connection; without one (the web service alone),
        `connect` makes one of the sampler's own, to read the queues."""
        self._metrics = metrics
        self._pool = pool
        self._broker = broker
        self._connect = connect
        self._own: Broker | None = None
        self._unreachable = False  # logged once, until the broker answers again
        self._issues_due = 0.0  # time.monotonic() of the next reading of active issues
        self._queues = queues
        self._interval = interval
        self._issues = Issues(pool)
        self._workers = Workers(pool)
        self._parked = ParkedJobs(pool)
        self._series = {
            name: _Series(gauge)
            for name, gauge in (
                ("messages", metrics.queue_messages),
                ("consumers", metrics.queue_consumers),
                ("unacked", metrics.queue_unacked),
                ("deliveries", metrics.issue_deliveries),
                ("rate", metrics.issue_rate),
                ("stalled", metrics.issue_stalled),
                ("last_send", metrics.issue_last_send),
            )
        }
        for presence in ("alive", "gone", "stopped"):
            metrics.workers.labels(presence)
        for state in WEBHOOK_STATES:
            metrics.webhook_endpoints.labels(state)

    async def run(self, stopping: asyncio.Event) -> None:
        try:
            while not stopping.is_set():
                try:
                    await self.sample()
                except Exception:  # a bug here must not take the service down
                    log.exception("metrics sample failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=self._interval)
        finally:
            if self._own is not None:
                await self._own.close()
                self._own = None

    async def _reach_broker(self) -> Broker | None:
        if self._broker is not None or self._connect is None:
            return self._broker
        if self._own is None:
            broker = self._connect()
            try:
                await broker.connect()
            except MailerError as exc:
                if not self._unreachable:
                    log.warning("metrics sample: %s (trying again every sample)", exc)
                self._unreachable = True
                return None
            self._unreachable = False
            self._own = broker
        return self._own

    async def sample(self) -> None:
        metrics = self._metrics
        up = await database.ping(self._pool)
        metrics.database_up.set(int(up))
        metrics.sampled.labels("database").set_to_current_time()
        broker = await self._reach_broker()
        connected = broker is not None and broker.is_connected
        metrics.broker_up.set(int(connected))
        if broker is not None and connected:
            await self._sample_queues(broker, self._workers if up else None)
        issues_read = False
        if up:
            try:
                await self._sample_parked()
                metrics.sampled.labels("parked").set_to_current_time()
                await self._sample_workers()
                metrics.sampled.labels("workers").set_to_current_time()
                await self._sample_events()
                metrics.sampled.labels("events").set_to_current_time()
                for state, n in (await endpoint_counts(self._pool)).items():
                    metrics.webhook_endpoints.labels(state).set(n)
                metrics.sampled.labels("webhooks").set_to_current_time()
                if time.monotonic() >= self._issues_due:
                    started = time.monotonic()
                    await self._sample_issues()
                    took = time.monotonic() - started
                    self._issues_due = started + max(self._interval, took * ISSUE_READ_SHARE)
                    issues_read = True
                    metrics.sampled.labels("issues").set_to_current_time()
            except TemporaryFailure as exc:
                log.warning("metrics sample: %s", exc)
        for name, series in self._series.items():
            if issues_read or name in ("messages", "consumers", "unacked"):
                series.sweep()

    async def _sample_queues(self, broker: Broker, workers: Workers | None) -> None:
        try:
            states = await queue_states(broker, workers, self._queues)
        except TemporaryFailure as exc:
            log.warning("metrics sample: %s", exc)
            return
        for state in states:
            if state.ready is None or state.consumers is None:
                continue  # not declared (yet): no series rather than a false zero
            self._series["messages"].set((state.queue,), state.ready)
            self._series["consumers"].set((state.queue,), state.consumers)
            if state.unacked is not None:
                self._series["unacked"].set((state.queue,), state.unacked)
        self._metrics.sampled.labels("queues").set_to_current_time()

    async def _sample_parked(self) -> None:
        counts = dict.fromkeys((*ROUTES.values(), "unknown"), 0)
        for origin, n in (await self._parked.counts()).items():
            counts[origin_label(origin)] += n
        for origin, n in counts.items():
            self._metrics.parked_jobs.labels(origin).set(n)

    async def _sample_workers(self) -> None:
        counts = dict.fromkeys(("alive", "gone", "stopped"), 0)
        for process in await self._workers.list():
            counts[process.presence] += 1
        for presence, count in counts.items():
            self._metrics.workers.labels(presence).set(count)

    async def _sample_events(self) -> None:
        async with unavailable_is_temporary("events backlog"):
            backlog = await outbox.backlog(self._pool)
        self._metrics.events_backlog.set(backlog.waiting)
        age = 0.0
        if backlog.oldest is not None:
            age = max(0.0, (backlog.measured_at - backlog.oldest).total_seconds())
        self._metrics.events_oldest.set(age)

    async def _sample_issues(self) -> None:
        for progress in await self._issues.active():
            issue = progress.issue
            labels = (str(issue.id), issue.list_slug)
            for status in READING_ORDER:
                self._series["deliveries"].set((*labels, status), issue.counts.get(status, 0))
            estimate = progress.estimate
            facts = progress.facts
            last = facts.last_sent_at or facts.started_at
            if last is not None:
                age = (facts.measured_at - last).total_seconds()
                self._series["last_send"].set(labels, max(0.0, age))
            sending = issue.state == "sending"
            self._series["rate"].set(labels, estimate.rate or 0.0)
            self._series["stalled"].set(labels, int(sending and estimate.stalled is not None))
