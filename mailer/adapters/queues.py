"""The depth of mailer's queues, as RabbitMQ reports them to a passive declare: messages
ready and consumers attached (from every process). Unacknowledged counts are known only to
the management plugin, which mailer does not require."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

import aiormq
from aio_pika.exceptions import AMQPException

from mailer.adapters.broker import DEAD_QUEUE, ROUTES, Broker, delay_queue_name
from mailer.errors import TemporaryFailure


@dataclass(frozen=True, slots=True)
class QueueDepth:
    name: str
    ready: int | None  # None: the queue does not exist
    consumers: int | None


def queue_names(delays_ms: Iterable[int]) -> list[str]:
    """Every mailer.* queue: the work queues, the dead letters, the delay queues."""
    return [
        *ROUTES.values(),
        DEAD_QUEUE,
        *(delay_queue_name(ms) for ms in sorted(set(delays_ms))),
    ]


async def queue_depths(broker: Broker, names: Iterable[str]) -> list[QueueDepth]:
    if not broker.is_connected:
        raise TemporaryFailure("broker not connected")
    found: list[QueueDepth] = []
    channel = None
    try:
        for name in names:
            if channel is None or channel.is_closed:
                channel = await broker.open_channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                found.append(QueueDepth(name, None, None))  # the broker closed the channel
                continue
            result = queue.declaration_result
            found.append(QueueDepth(name, result.message_count, result.consumer_count))
    except (AMQPException, aiormq.exceptions.AMQPError, OSError, ConnectionError) as exc:
        raise TemporaryFailure(f"broker: cannot read queue depths: {exc!r}") from exc
    finally:
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(AMQPException, aiormq.exceptions.AMQPError, OSError):
                await channel.close()
    return found
