"""The events relay: the outbox (mailer/adapters/outbox.py) published on `mailer.events`.

It runs in every worker process; one at a time relays, the holder of the outbox's advisory
lock (a session lock on a connection of the relay's own). The others try to take it every
`takeover_interval`: when the leader's process dies or its connection goes, PostgreSQL
lets the lock go with it and another process leads within that time.

The leader, every `poll_interval` (at once while there is more):
1. sequences what has committed since (gives it its position, in commit order) and marks
   it published, in one transaction that it commits once the broker confirmed each event:
   each event's row is written once by the relay. Events of one message (of one
   subscription, one issue: `order_key`) go one after the other, the rest together; after
   a failure nothing later of the batch is sent, so a message's events never overtake one
   another, and the transaction rolls back;
2. while the broker is away, it goes on sequencing alone, so the order of commits is kept
   as they happen (and webhooks, which follow positions, go on), and once the broker is
   back publishes that backlog in position order first, marking what was confirmed;
3. now and then deletes events published longer ago than the retention, a batch at a time.

Every step runs on the lock's connection: a leader that lost it (the database failed over,
the connection was cut) fails at its next statement and stops leading. At-least-once: an
event confirmed but not yet marked when the leader goes is published again by the next one,
with the same id.

Where webhook dispatch is built too: beside this part, in mailer/assembly/events.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg

from mailer.adapters import outbox
from mailer.adapters.database import UNAVAILABLE
from mailer.config import EventsSettings
from mailer.core.events import StoredEvent, order_key
from mailer.errors import TemporaryFailure
from mailer.metrics import Metrics
from mailer.parts import Checks

log = logging.getLogger(__name__)
Publish = Callable[[StoredEvent], Awaitable[None]]
PURGE_EVERY = 60.0  # seconds between the leader's retention passes
PURGE_BATCHES = 20  # at most this many batches deleted a pass
FIRST_WAIT = 0.5
MAX_WAIT = 10.0
# What ends a leader's term (the connection is lost, the server went read-only or away).
LOST = (*UNAVAILABLE, asyncpg.PostgresError, asyncpg.InterfaceError)


class EventRelay:
    name = "events"

    def __init__(
        self,
        dsn: str,
        publish: Publish,
        settings: EventsSettings,
        metrics: Metrics,
        *,
        connect: Callable[[str], Awaitable[asyncpg.Connection]] | None = None,
    ) -> None:
        self._dsn = dsn
        self._publish = publish
        self._settings = settings
        self._metrics = metrics
        self._connect = connect or _connect
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self.conn: asyncpg.Connection | None = None  # the lock's, while this process leads
        self.leading = False
        self.published = 0  # events this process published (confirmed), repeats included
        self._purged_at = 0.0

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="events-relay")

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), 5)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._let_go()

    async def readiness(self) -> Checks:
        """Never makes the worker unready: mail goes on while events wait in the outbox (the
        backlog is on /metrics and alerted on); it says whether this process relays."""
        detail = "relaying (holds the outbox lock)" if self.leading else "standing by"
        return {"events": {"ok": True, "detail": detail}}

    def wake(self) -> None:
        """Look for events now (tests, and a replay in the same process)."""
        self._wake.set()

    async def _run(self) -> None:
        wait = FIRST_WAIT
        while not self._stopping.is_set():
            try:
                if await self._take_lead():
                    wait = FIRST_WAIT
                    await self._lead()
                else:
                    await self._pause(self._settings.takeover_interval)
            except LOST as exc:
                if self.leading:
                    log.warning(
                        "events relay: lost the outbox (%s); another worker takes over", exc
                    )
                else:
                    log.warning("events relay: database unavailable (%s)", exc)
                await self._let_go()
                await self._pause(wait)
                wait = min(wait * 2, MAX_WAIT)
            except Exception:
                log.exception("events relay: unexpected error")
                await self._let_go()
                await self._pause(wait)
                wait = min(wait * 2, MAX_WAIT)

    async def _take_lead(self) -> bool:
        if self.conn is None or self.conn.is_closed():
            self.conn = await self._connect(self._dsn)
        self.leading = await outbox.lead(self.conn)
        self._metrics.events_leader.set(int(self.leading))
        if self.leading:
            log.info("events relay: this worker relays the outbox")
        return self.leading

    async def _lead(self) -> None:
        conn = self.conn
        assert conn is not None
        batch = self._settings.batch
        broker_wait = FIRST_WAIT
        while not self._stopping.is_set():
            await self._purge(conn)
            error = await self._publish_backlog(conn, batch)
            more = False
            if error is None:
                error, more = await self._publish_next(conn, batch)
            if error is not None:
                # Keep the order of commits while the broker is away: sequenced now,
                # published later from the backlog.
                while await outbox.sequence(conn, batch) == batch:
                    pass
                log.warning(
                    "events relay: events wait for the broker, trying again in %.1fs: %s",
                    broker_wait,
                    error,
                )
                await self._pause(broker_wait)
                broker_wait = min(broker_wait * 2, MAX_WAIT)
                continue
            broker_wait = FIRST_WAIT
            if not more:
                await self._pause(self._settings.poll_interval)

    async def _publish_backlog(self, conn: asyncpg.Connection, batch: int) -> Exception | None:
        """What was sequenced while the broker was away, published and marked."""
        while events := await outbox.unpublished(conn, batch):
            done, error = await publish_in_order(self._publish, events)
            if done:
                await outbox.mark_published(conn, [e.position for e in done])
                self._count(done)
            if error is not None:
                return error
        return None

    async def _publish_next(
        self, conn: asyncpg.Connection, batch: int
    ) -> tuple[Exception | None, bool]:
        """The next events committed, sequenced and marked published in one transaction
        that commits once the broker confirmed every one of them (after a failure it rolls
        back: those confirmed are published again later). Returns the failure, and whether
        a whole batch went (there may be more)."""
        try:
            async with conn.transaction():
                events = await outbox.sequence_as_published(conn, batch)
                done, error = await publish_in_order(self._publish, events)
                if error is not None:
                    raise _Unconfirmed(error)
        except _Unconfirmed as unconfirmed:
            return unconfirmed.error, False
        self._count(done)
        return None, len(events) == batch

    def _count(self, done: Sequence[StoredEvent]) -> None:
        self.published += len(done)
        self._metrics.events_published.inc(len(done))
        now = datetime.now(UTC)
        for event in done:
            self._metrics.events_delay.observe(max(0.0, (now - event.occurred_at).total_seconds()))

    async def _purge(self, conn: asyncpg.Connection) -> None:
        if time.monotonic() - self._purged_at < PURGE_EVERY:
            return
        self._purged_at = time.monotonic()
        retention = timedelta(days=self._settings.retention_days)
        total = 0
        for _ in range(PURGE_BATCHES):
            purged = await outbox.purge(conn, retention, self._settings.batch)
            total += purged
            if purged < self._settings.batch:
                break
        if total:
            log.info("events relay: %d event(s) past the retention deleted", total)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _let_go(self) -> None:
        conn, self.conn = self.conn, None
        if self.leading:
            self.leading = False
            self._metrics.events_leader.set(0)
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)
            if not conn.is_closed():
                conn.terminate()


async def publish_in_order(
    publish: Publish, events: Sequence[StoredEvent]
) -> tuple[list[StoredEvent], Exception | None]:
    """Publish `events` (in position order) in waves of events with distinct order keys,
    each wave confirmed before the next; stop after the first wave with a failure. Returns
    those confirmed, and the failure."""
    done: list[StoredEvent] = []
    wave: list[StoredEvent] = []
    keys: set[tuple[object, ...]] = set()

    async def flush() -> Exception | None:
        results = await asyncio.gather(*(publish(e) for e in wave), return_exceptions=True)
        error: Exception | None = None
        for sent, result in zip(wave, results, strict=True):
            if isinstance(result, Exception):
                error = error or result
            elif isinstance(result, BaseException):
                raise result
            else:
                done.append(sent)
        wave.clear()
        keys.clear()
        return error

    for event in events:
        key = order_key(event.body)
        if key in keys and (error := await flush()) is not None:
            return done, _temporary(error)
        wave.append(event)
        keys.add(key)
    if wave and (error := await flush()) is not None:
        return done, _temporary(error)
    return done, None


class _Unconfirmed(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _temporary(error: Exception) -> Exception:
    return error if isinstance(error, TemporaryFailure) else TemporaryFailure(repr(error))


async def _connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, timeout=10, command_timeout=30)
