"""One handler per queue: run the pipeline, then ack, retry later or park. Explicitly.

aio-pika's `message.process()` would reject on any exception, which would park good jobs
during a database outage; here every path decides what happens to the message:

- the job is settled → ack;
- it cannot ever succeed (InvalidJob) → park it with the reason (worker/parking.py), then ack;
- not yet (a retry, or the database/relay unreachable) → round a delay queue, then ack;
- an unexpected error (a bug) → round a delay queue too, counted in a header; after
  MAX_UNEXPECTED of them it is parked with the error as the reason. A message that crashes
  the whole process is handed out again until the queue's delivery limit parks it as poison.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass

from mailer.adapters.broker import Broker
from mailer.adapters.consuming import QueueMessage
from mailer.adapters.topology import FAILURES_HEADER
from mailer.core.addresses import mask_addresses
from mailer.errors import InvalidJob, ShuttingDown, TemporaryFailure
from mailer.metrics import Metrics
from mailer.worker.parking import Parking
from mailer.worker.verdicts import Done, Later, Verdict

log = logging.getLogger(__name__)

Deliver = Callable[[bytes], Awaitable[Verdict]]
MAX_UNEXPECTED = 5


@dataclass(eq=False, repr=False)
class QueueHandler:
    queue: str
    deliver: Deliver
    _: KW_ONLY
    broker: Broker
    parking: Parking
    metrics: Metrics
    unavailable_delay: float

    async def __call__(self, message: QueueMessage) -> None:
        gauge = self.metrics.inflight.labels(self.queue)
        gauge.inc()
        try:
            await self._handle(message)
        finally:
            gauge.dec()

    async def _handle(self, message: QueueMessage) -> None:
        try:
            verdict = await self.deliver(message.body)
        except InvalidJob as exc:
            reason = exc.reason
            await self._settle(message, lambda: self._park(message, reason))
            return
        except ShuttingDown:
            await message.give_back()  # straight back to the queue, for another worker
            return
        except TemporaryFailure as exc:
            log.warning("%s: %s; retrying in %.0fs", self.queue, exc, self.unavailable_delay)
            verdict = Later(self.unavailable_delay, 0)
        except Exception as exc:
            await self._unexpected(message, exc)
            return
        if isinstance(verdict, Done):
            await self._settle(message, None)
        else:
            await self._settle(message, lambda: self._later(message, verdict))

    async def _unexpected(self, message: QueueMessage, exc: Exception) -> None:
        failures = _failures(message) + 1
        if failures >= MAX_UNEXPECTED:
            log.exception("%s: unexpected error, %d times: parking", self.queue, failures)
            reason = f"unexpected error, {failures} times: {type(exc).__name__}: {exc}"
            await self._settle(message, lambda: self._park(message, reason))
            return
        log.exception("%s: unexpected error (%d); retrying later", self.queue, failures)
        delay = self.unavailable_delay

        async def later() -> None:
            await self.broker.retry_later(
                message,
                queue=self.queue,
                delay_ms=_ms(delay),
                attempt=0,
                failures=failures,
            )

        await self._settle(message, later)

    async def _park(self, message: QueueMessage, reason: str) -> None:
        await self.parking.park(message, origin=self.queue, reason=reason)
        self.metrics.parked.labels(self.queue).inc()
        log.warning(
            "%s: parked job=%s reason=%r", self.queue, message.message_id, mask_addresses(reason)
        )

    async def _later(self, message: QueueMessage, verdict: Later) -> None:
        # An unexpected error counted before stays counted across "not yet" rounds.
        await self.broker.retry_later(
            message,
            queue=self.queue,
            delay_ms=_ms(verdict.delay),
            attempt=verdict.attempt,
            failures=_failures(message),
        )

    async def _settle(
        self, message: QueueMessage, before_ack: Callable[[], Awaitable[None]] | None
    ) -> None:
        try:
            if before_ack is not None:
                await before_ack()
            await message.ack()
        except (TemporaryFailure, OSError) as exc:
            log.warning("%s: could not settle a message (%s); it will come back", self.queue, exc)
            await message.give_back()


def _failures(message: QueueMessage) -> int:
    previous = message.headers.get(FAILURES_HEADER, 0)
    return previous if isinstance(previous, int) else 0


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
