"""Lifecycle: the parts of this process (mailer/parts), as mailer/assembly builds them from
the settings, started in order and stopped in reverse, without losing a message.

Start: what the settings alone decide (templates, keys, addresses, the relay) is checked
before any connection → database (the schema must be current) → mailing lists → capture
server (when no relay is configured) → broker (topology declared) → worker → bounce
receiver → public web → operators' console → sampler. A part that fails to start is
stopped, and so is every part started before it.

Stop (SIGTERM): first the worker drains while everything else runs: consumers stop taking
messages and dispatchers stop claiming; the relays refuse new transactions, so work that has
not reached a relay goes straight back (to its queue, or to the ledger as pending) while a
transaction under way finishes and is recorded. Then every part stops in reverse: the
listeners; the worker, handing back the claims it never tried; the broker and the pool last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar
from uuid import uuid4

from mailer.assembly import Assembly, Selection
from mailer.config import Settings
from mailer.health import Heartbeat, RelayHealth
from mailer.metrics import Metrics
from mailer.parts import Draining, Part
from mailer.sampling import SAMPLE_INTERVAL

log = logging.getLogger(__name__)
P = TypeVar("P", bound=Part)


def _now() -> datetime:
    return datetime.now(UTC)


class Service:
    def __init__(
        self,
        settings: Settings,
        *,
        run_worker: bool = True,
        run_web: bool = True,
        run_bounces: bool | None = None,
        clock: Callable[[], datetime] = _now,
        sample_interval: float = SAMPLE_INTERVAL,
    ) -> None:
        """`run_bounces`: None runs the bounce receiver alongside the worker and the web
        (`mailer run`) when [bounces] domain is set; True asks for it by name."""
        self.settings = settings
        self.clock = clock
        self.metrics = Metrics()
        self.worker_id = uuid4()
        self._assembly = Assembly(
            settings=settings,
            selection=Selection(
                worker=run_worker,
                web=run_web,
                bounces=run_bounces if run_bounces is not None else run_worker and run_web,
                bounces_required=bool(run_bounces),
            ),
            metrics=self.metrics,
            worker_id=self.worker_id,
            clock=clock,
            sample_interval=sample_interval,
            relay_health=RelayHealth(self.metrics),
            heartbeat=Heartbeat(settings.worker.lease),
        )
        self._parts: list[Part] = []  # started, in the order they started

    def part(self, kind: type[P]) -> P:
        """The started part of this kind (LookupError when this process runs none)."""
        for started in self._parts:
            if isinstance(started, kind):
                return started
        raise LookupError(f"no {kind.__name__} runs in this process")

    def runs(self, kind: type[Part]) -> bool:
        return any(isinstance(started, kind) for started in self._parts)

    async def start(self) -> None:
        """Each part in turn; when one fails, the ones started are stopped, in reverse."""
        try:
            for part in self._assembly.parts():
                self._parts.append(part)  # stopped even if its start fails halfway
                await part.start()
        except BaseException:
            with contextlib.suppress(Exception):  # logged by stop(); the start's error wins
                await self.stop()
            raise
        log.info("mailer started: %s", ", ".join(part.name for part in self._parts))

    async def stop(self) -> None:
        """Drain what takes work, then stop every started part in reverse order, the next
        even when one fails; safe to call more than once."""
        failed: list[Exception] = []
        for part in reversed(self._parts):
            if isinstance(part, Draining):
                await _noting(part.drain(), f"{part.name} did not drain cleanly", failed)
        while self._parts:
            part = self._parts.pop()
            await _noting(part.stop(), f"{part.name} did not stop cleanly", failed)
        log.info("mailer stopped")
        if failed:
            raise failed[0]

    async def run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await self.start()
            await stop.wait()
            log.info("signal received: draining")
        finally:
            await self.stop()


async def _noting(step: Awaitable[None], failure: str, failed: list[Exception]) -> None:
    try:
        await step
    except Exception as exc:
        log.exception(failure)
        failed.append(exc)
