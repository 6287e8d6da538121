"""Parking a job that can never succeed, and moving what reaches mailer.dead into the table.

The worker parks straight into PostgreSQL (adapters/parked.py). With the database away, or
too slow to answer within PARK_TIMEOUT, the job goes to mailer.dead instead, its reason in
headers, and the queue message is acknowledged only after one or the other took it: a
parked job is never lost, and never holds up the queue it came from.

Every worker also consumes mailer.dead: poison RabbitMQ dead-lettered there, and what was
parked there while the database was away, is recorded in the table and then acknowledged.
While the database cannot take it, the message is held (not handed back, which would count
one more delivery) and tried again, with a growing pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from mailer.adapters.broker import Broker
from mailer.adapters.consuming import QueueMessage
from mailer.adapters.dead_letters import parked_by_worker, parked_from_dead_queue
from mailer.adapters.parked import ParkedJobs
from mailer.core.addresses import mask_addresses
from mailer.errors import TemporaryFailure

log = logging.getLogger(__name__)
PARK_TIMEOUT = 5.0  # seconds the database has to take a parked job before mailer.dead does
FIRST_WAIT = 0.2
MAX_WAIT = 5.0


class Parking:
    def __init__(
        self,
        parked: ParkedJobs,
        broker: Broker,
        *,
        clock: Callable[[], datetime],
        timeout: float = PARK_TIMEOUT,
    ) -> None:
        self._parked = parked
        self._broker = broker
        self._clock = clock
        self._timeout = timeout

    async def park(self, message: QueueMessage, *, origin: str, reason: str) -> None:
        """Into the table, else into mailer.dead; TemporaryFailure when neither took it
        (the caller then hands the message back to its queue)."""
        reason = mask_addresses(reason)
        job = parked_by_worker(message, origin=origin, reason=reason, now=self._clock())
        try:
            async with asyncio.timeout(self._timeout):
                await self._parked.record(job)
            return
        except (TemporaryFailure, TimeoutError) as exc:
            why = str(exc) or f"no answer within {self._timeout:g}s"
        except Exception as exc:  # a job the table refuses must not be lost either
            log.exception("%s: parked job %s not recorded in the database", origin, job.ref)
            why = f"{type(exc).__name__}"
        log.warning(
            "%s: parked job %s in mailer.dead instead (%s); moved into the database later",
            origin,
            job.ref,
            why,
        )
        await self._broker.park(
            message, origin=origin, reason=job.reason, deliveries=job.deliveries
        )


class DeadQueueMover:
    """The consumer of mailer.dead: record each message in the table, then acknowledge it."""

    def __init__(self, parked: ParkedJobs, *, clock: Callable[[], datetime]) -> None:
        self._parked = parked
        self._clock = clock
        self._stopping = asyncio.Event()
        self._one_at_a_time = asyncio.Lock()  # while the database is away, one waits, not all

    def stop(self) -> None:
        self._stopping.set()

    async def __call__(self, message: QueueMessage) -> None:
        job = parked_from_dead_queue(message, now=self._clock())
        wait = FIRST_WAIT
        async with self._one_at_a_time:
            while True:
                try:
                    added = await self._parked.record(job)
                    break
                except Exception as exc:  # the database away, above all: held, tried again
                    if self._stopping.is_set():
                        await message.give_back()
                        return
                    log.warning(
                        "mailer.dead: job %s not moved into the database yet, trying again"
                        " in %.1fs: %s: %s",
                        job.ref,
                        wait,
                        type(exc).__name__,
                        exc,
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), timeout=wait)
                    wait = min(wait * 2, MAX_WAIT)
        try:
            await message.ack()
        except TemporaryFailure as exc:  # redelivered, and recorded once still
            log.warning("mailer.dead: could not acknowledge job %s (%s)", job.ref, exc)
            return
        log.info(
            "mailer.dead: job %s from %s %s the database: %s",
            job.ref,
            job.origin or "an unknown queue",
            "moved into" if added else "was already in",
            job.reason,
        )
