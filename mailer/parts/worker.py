"""The worker runtime as a part: the consumers of the work queues and of mailer.dead, the
dispatchers of newsletter chunks, the heartbeat that renews what the worker holds, and this
process's row in `workers`.

Start: the throttle's limits written → database notifications listened to → a consumer per
queue → the dispatch loops → the process registered → the heartbeat and the process report.

Drain (at SIGTERM, before any part stops): consumers stop taking messages and dispatchers
stop claiming; the relays refuse new transactions, so work that has not reached a relay goes
straight back (to its queue, or to the ledger as pending) while a transaction under way
finishes and is recorded. Stop (after the parts started after it): the claims never tried
are handed back and the process is marked stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mailer.adapters.broker import Broker
from mailer.adapters.consuming import Consumer, Handler
from mailer.adapters.deliveries import Deliveries
from mailer.adapters.notifications import Listener
from mailer.adapters.relay import Relay
from mailer.adapters.throttle import Throttle
from mailer.adapters.topology import DEAD_QUEUE, ROUTES
from mailer.config import DomainLimit
from mailer.errors import TemporaryFailure
from mailer.health import Heartbeat, RelayHealth
from mailer.parts import Checks
from mailer.parts.loops import Loops
from mailer.parts.presence import Presence
from mailer.worker.chunks import ChunkRunner
from mailer.worker.newsletters import Dispatcher
from mailer.worker.receipts import ReceiptPipeline

log = logging.getLogger(__name__)
DISPATCH_LOOPS = 2  # chunks in hand at once per process: one sends while the other records


class Halting(Protocol):
    def stop(self) -> None:
        """Take no more work; what is under way goes on."""


@dataclass(frozen=True, slots=True)
class Intake:
    """One queue the worker consumes: its handler, and how many messages it holds at once."""

    queue: str
    handler: Handler
    prefetch: int


@dataclass(frozen=True, slots=True)
class Holdings:
    """What the worker holds in the ledger: claimed deliveries and the throttle's slots,
    renewed by the heartbeat; and the outcomes it knows but has not written yet."""

    deliveries: Deliveries
    throttle: Throttle
    receipts: ReceiptPipeline
    runner: ChunkRunner

    def owed(self) -> list[int]:
        """Deliveries whose outcome is known but not yet written."""
        return self.receipts.owed() + self.runner.owed()

    async def renew(self) -> None:
        await self.deliveries.renew_leases()
        await self.throttle.renew(self.runner.holders())

    async def release(self) -> None:
        """Hand back what was claimed and never tried; keep the claims of outcomes known
        but not written, so that no other worker sends those again while they are valid."""
        owed = self.owed()
        if owed:
            log.error(
                "%d outcomes known but not recorded (the database is away): their claims"
                " stay until they lapse; those messages may be sent again",
                len(owed),
            )
        with contextlib.suppress(TemporaryFailure):
            released = await self.deliveries.release_unattempted(keep=owed)
            if released:
                log.info("handed back %d unfinished deliveries", released)


@dataclass(frozen=True, slots=True)
class Limits:
    """The newsletter's send rates, written for every worker to share at start."""

    rate: float
    domains: Mapping[str, DomainLimit]


@dataclass(eq=False)
class WorkerRuntime:
    broker: Broker
    intakes: Sequence[Intake]
    halting: Sequence[Halting]  # told to take no more work before the consumers are cancelled
    dispatcher: Dispatcher
    relays: Sequence[Relay]  # closed at a stop: they refuse new transactions
    notifications: Listener
    holdings: Holdings
    limits: Limits
    presence: Presence
    relay_health: RelayHealth
    heartbeat: Heartbeat
    lease: float
    drain_timeout: float
    name: str = "worker"
    _consumers: list[Consumer] = field(default_factory=list, init=False)
    _dispatching: list[asyncio.Task[None]] = field(default_factory=list, init=False)
    _loops: Loops = field(default_factory=Loops, init=False)

    async def start(self) -> None:
        await self.holdings.throttle.configure(self.limits.rate, self.limits.domains)
        await self.notifications.start()
        for intake in self.intakes:
            consumer = await self.broker.consume(
                intake.queue, intake.handler, prefetch=intake.prefetch
            )
            self._consumers.append(consumer)
        self._dispatching = [
            asyncio.create_task(self.dispatcher.run(), name=f"dispatch-{n}")
            for n in range(DISPATCH_LOOPS)
        ]
        await self.presence.register()
        self._loops.run(self._renew_leases, "heartbeat")
        self._loops.run(self.presence.report.run, "process report")

    async def drain(self) -> None:
        """Take no more work; let what is in hand finish and be recorded (see the module's
        docstring). The other parts still run meanwhile: /readyz says not ready."""
        self._loops.stopping.set()
        for halting in self.halting:
            halting.stop()
        await asyncio.gather(*(consumer.cancel() for consumer in self._consumers))
        for relay in self.relays:
            await relay.close()
        await asyncio.gather(
            *(consumer.drain(self.drain_timeout) for consumer in self._consumers),
            _finish(self._dispatching, self.drain_timeout),
        )
        self._consumers.clear()
        self._dispatching.clear()
        await self._loops.end()

    async def stop(self) -> None:
        """Drained, hand back the claims never tried and mark the process stopped."""
        await self.drain()
        await self.notifications.stop()
        await self.holdings.release()
        await self.presence.deregister()

    async def readiness(self) -> Checks:
        """Its consumers live, its relay taking sessions, its leases renewed."""
        queues = dict.fromkeys((*ROUTES.values(), DEAD_QUEUE), False)
        queues.update(self.broker.consumers())
        missing = [queue for queue, live in queues.items() if not live]
        return {
            "consumers": {
                "ok": not missing,
                "detail": f"no consumer on {', '.join(missing)}" if missing else "consuming",
                "queues": queues,
            },
            "relay": self.relay_health.check(),
            "heartbeat": self.heartbeat.check().as_json(),
        }

    async def _renew_leases(self, stopping: asyncio.Event) -> None:
        """Renew the leases on what this worker holds, so nobody takes it over. Whatever
        goes wrong is logged and shown by /readyz; the heartbeat itself goes on."""
        interval = self.lease / 3
        wait = interval
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=wait)
            wait = min(interval, 0.5)  # after a failure: again soon, before the leases lapse
            try:
                await self.holdings.renew()
            except TemporaryFailure as exc:
                log.warning("could not renew leases: %s", exc)
                self.heartbeat.failed(str(exc))
            except Exception as exc:
                if self.heartbeat.check().ok:
                    log.exception("could not renew leases")
                else:
                    log.error("could not renew leases: %s: %s", type(exc).__name__, exc)
                self.heartbeat.failed(f"{type(exc).__name__}: {exc}")
            else:
                self.heartbeat.renewed()
                wait = interval
                await self.presence.beat()


async def _finish(tasks: list[asyncio.Task[None]], drain_timeout: float) -> None:
    if not tasks:
        return
    _, late = await asyncio.wait(tasks, timeout=drain_timeout)
    for task in late:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
