"""Queue depths for operators, over AMQP: a passive declare of each `mailer.*` queue.

RabbitMQ 3.10 answers a passive declare with the messages ready and the consumers; it does
not say how many are delivered and unacknowledged (that needs the management plugin, which
this deployment does not enable), so `unacked` is None here rather than a guess.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from aio_pika.exceptions import AMQPException, ChannelClosed

from mailer.adapters.broker import DEAD_QUEUE, ROUTES, Broker, delay_queue_name


@dataclass(frozen=True, slots=True)
class QueueDepth:
    name: str
    ready: int | None  # None: the queue does not exist (or could not be asked)
    unacked: int | None
    consumers: int | None
    measured_at: datetime
    error: str | None = None


def mailer_queues(delays_ms: Iterable[int]) -> list[str]:
    return [*ROUTES.values(), *(delay_queue_name(ms) for ms in delays_ms), DEAD_QUEUE]


async def depths(broker: Broker, names: Iterable[str]) -> list[QueueDepth]:
    found: list[QueueDepth] = []
    channel = await broker.open_channel()
    try:
        for name in names:
            try:
                queue = await channel.declare_queue(name, passive=True)
            except (ChannelClosed, AMQPException) as exc:
                # a missing queue closes the channel: say so and carry on with a new one
                found.append(
                    QueueDepth(name, None, None, None, datetime.now(UTC), f"not declared: {exc}")
                )
                if channel.is_closed:
                    channel = await broker.open_channel()
                continue
            result = queue.declaration_result
            found.append(
                QueueDepth(
                    name, result.message_count, None, result.consumer_count, datetime.now(UTC)
                )
            )
    finally:
        if not channel.is_closed:
            await channel.close()
    return found
