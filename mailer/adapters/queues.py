"""The depth of mailer's queues, as RabbitMQ reports them to a passive declare: messages
ready and consumers attached (from every process). Unacknowledged counts are known to plain
AMQP only by the consumers holding them (and to the management plugin, which mailer does not
require): `queue_states` adds those the worker processes alive report (adapters/workers.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import aiormq
from aio_pika.exceptions import AMQPException

from mailer.adapters.broker import Broker
from mailer.adapters.topology import DEAD_QUEUE, ROUTES, delay_queue_name
from mailer.adapters.workers import Workers
from mailer.errors import TemporaryFailure


@dataclass(frozen=True, slots=True)
class QueueDepth:
    name: str
    ready: int | None  # None: the queue does not exist
    consumers: int | None


@dataclass(frozen=True, slots=True)
class QueueState:
    """One mailer.* queue as an operator sees it. `ready` and `consumers` come from the broker
    at `measured_at`; `unacked` is what the worker processes alive hold (each reported at
    most a few seconds before `unacked_as_of`). None: not known (the queue does not exist,
    or the database could not be asked)."""

    queue: str
    ready: int | None
    unacked: int | None
    consumers: int | None
    measured_at: datetime
    unacked_as_of: datetime | None = None


async def queue_states(
    broker: Broker, workers: Workers | None, names: Iterable[str]
) -> list[QueueState]:
    """Every queue named: the broker's numbers joined with the unacked the workers report.
    TemporaryFailure when the broker cannot be asked; unacked is None without `workers` (the
    database known to be down) or when the database does not answer."""
    depths = await queue_depths(broker, names)
    measured_at = datetime.now(UTC)
    counts: Mapping[str, int] | None = None
    as_of = None
    if workers is not None:
        with contextlib.suppress(TemporaryFailure):
            held = await workers.unacked()
            counts, as_of = held.counts, held.as_of
    return [
        QueueState(
            queue=depth.name,
            ready=depth.ready,
            unacked=None if counts is None or depth.ready is None else counts.get(depth.name, 0),
            consumers=depth.consumers,
            measured_at=measured_at,
            unacked_as_of=as_of,
        )
        for depth in depths
    ]


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
