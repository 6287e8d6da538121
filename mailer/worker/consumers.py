"""One handler per queue: run the pipeline, then ack, retry later or park. Explicitly.

aio-pika's `message.process()` would reject on any exception, which would park good jobs
during a database outage; here every path decides what happens to the message:

- the job is settled → ack;
- it cannot ever succeed (InvalidJob) → park in mailer.dead with the reason, then ack;
- not yet (a retry, or the database/relay unreachable) → round a delay queue, then ack;
- an unexpected error → nack with requeue; a message that keeps failing that way is handed
  out DELIVERY_LIMIT times and the queue dead-letters it to mailer.dead as poison.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPException

from mailer.adapters.broker import Broker
from mailer.errors import InvalidJob, TemporaryFailure
from mailer.metrics import Metrics
from mailer.worker.pipeline import Done, Later, Verdict

log = logging.getLogger(__name__)

Deliver = Callable[[bytes], Awaitable[Verdict]]


class QueueHandler:
    def __init__(
        self,
        queue: str,
        deliver: Deliver,
        *,
        broker: Broker,
        metrics: Metrics,
        unavailable_delay: float,
    ) -> None:
        self.queue = queue
        self._deliver = deliver
        self._broker = broker
        self._metrics = metrics
        self._unavailable_delay = unavailable_delay

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        gauge = self._metrics.inflight.labels(self.queue)
        gauge.inc()
        try:
            await self._handle(message)
        finally:
            gauge.dec()

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            verdict = await self._deliver(message.body)
        except InvalidJob as exc:
            reason = exc.reason
            await self._settle(message, lambda: self._park(message, reason))
            return
        except TemporaryFailure as exc:
            log.warning("%s: %s; retrying in %.0fs", self.queue, exc, self._unavailable_delay)
            verdict = Later(self._unavailable_delay, 0)
        except Exception:
            log.exception("%s: unexpected error; message returned to the queue", self.queue)
            await _nack(message)
            return
        if isinstance(verdict, Done):
            await self._settle(message, None)
        else:
            await self._settle(message, lambda: self._later(message, verdict))

    async def _park(self, message: AbstractIncomingMessage, reason: str) -> None:
        await self._broker.park(message, origin=self.queue, reason=reason)
        self._metrics.parked.labels(self.queue).inc()
        log.warning("%s: parked job=%s reason=%r", self.queue, message.message_id, reason)

    async def _later(self, message: AbstractIncomingMessage, verdict: Later) -> None:
        await self._broker.retry_later(
            message, queue=self.queue, delay_ms=_ms(verdict.delay), attempt=verdict.attempt
        )

    async def _settle(
        self, message: AbstractIncomingMessage, before_ack: Callable[[], Awaitable[None]] | None
    ) -> None:
        try:
            if before_ack is not None:
                await before_ack()
            await message.ack()
        except (TemporaryFailure, AMQPException, OSError) as exc:
            log.warning("%s: could not settle a message (%s); it will come back", self.queue, exc)
            await _nack(message)


async def _nack(message: AbstractIncomingMessage) -> None:
    # If the channel is gone, the broker returns the message to the queue anyway.
    with contextlib.suppress(AMQPException, OSError):
        await message.nack(requeue=True)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
