"""Dead letters: how a parked job reaches the parked_jobs table, and goes back to its queue.

    worker: InvalidJob ─► parked_jobs (adapters/parked.py) ─► ack
                  └ database away ─► mailer.dead, with the reason in headers ─► ack
    RabbitMQ: a job handed out past the delivery limit (poison) ─► mailer.dead
    mailer.dead ─► a worker's consumer records it in parked_jobs (once: idempotent) ─► ack
    operator: list and show (SELECTs) · requeue: publish to the origin queue, confirmed,
              then delete the row · purge: delete the row

Requeue is at least once: a job whose row cannot be deleted after its publish was confirmed
stays listed and is also in its queue (the worker then finds it already done by its id).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import DeliveryMode

from mailer.adapters.broker import Broker
from mailer.adapters.consuming import QueueMessage
from mailer.adapters.parked import ParkedJob, ParkedJobs, ParkedRow
from mailer.adapters.queues import queue_depths
from mailer.adapters.topology import (
    ATTEMPT_HEADER,
    DEAD_QUEUE,
    DELIVERIES_HEADER,
    DELIVERY_COUNT_HEADER,
    DELIVERY_LIMIT,
    FAILURES_HEADER,
    ORIGIN_HEADER,
    PARKED_AT_HEADER,
    QUEUE_ROUTES,
    REASON_HEADER,
    ROUTES,
    declare_dead_queue,
    queue_arguments,
)
from mailer.core.addresses import mask_addresses

log = logging.getLogger(__name__)

# Headers that say where a job was and why it was parked: columns of the row, not sent again.
PARKING_HEADERS = (ORIGIN_HEADER, REASON_HEADER, PARKED_AT_HEADER, DELIVERIES_HEADER)
# Headers the broker or the worker added on the way, dropped when a job is requeued: it
# starts again as the portal published it.
ROUTING_HEADERS = (
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    DELIVERY_COUNT_HEADER,
    ATTEMPT_HEADER,
    FAILURES_HEADER,
)
# The AMQP properties kept with a parked job and published again with it (aio-pika's names).
# Not user_id (the broker checks it against the publishing connection's user) nor
# delivery_mode (a requeued job is persistent).
KEPT_PROPERTIES = (
    "content_type",
    "content_encoding",
    "message_id",
    "correlation_id",
    "reply_to",
    "timestamp",
    "type",
    "app_id",
    "priority",
)


def _properties(message: QueueMessage, headers: dict[str, Any]) -> dict[str, Any]:
    return {**message.properties((*KEPT_PROPERTIES, "expiration")), "headers": headers}


def _text(value: object) -> str | None:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value) if value is not None else None


def _job_id(message: QueueMessage) -> str | None:
    """The message id, else the body's "id" (a job published without one)."""
    if message.message_id:
        return message.message_id
    try:
        value = json.loads(message.body)
    except (ValueError, RecursionError):
        return None
    job_id = value.get("id") if isinstance(value, dict) else None
    return job_id if isinstance(job_id, str) and len(job_id) <= 64 else None


def parked_by_worker(
    message: QueueMessage, *, origin: str, reason: str, now: datetime
) -> ParkedJob:
    """A job the worker parks: the reason it gives, masked once more before it is kept."""
    headers = message.headers
    # Earlier deliveries, as the quorum queue counts them (no header on the first one).
    count = headers.pop(DELIVERY_COUNT_HEADER, 0)
    return ParkedJob(
        body=message.body,
        origin=origin,
        reason=mask_addresses(reason),
        parked_at=now,
        job_id=_job_id(message),
        deliveries=count + 1 if isinstance(count, int) else None,
        properties=_properties(message, headers),
    )


def parked_from_dead_queue(message: QueueMessage, *, now: datetime) -> ParkedJob:
    """A message found in mailer.dead: parked by a worker while the database was away (its
    headers say where from and why), or dead-lettered by RabbitMQ (its x-death does)."""
    headers = message.headers
    headers.pop(DELIVERY_COUNT_HEADER, None)  # mailer.dead's own count: says nothing of the job
    origin = _text(headers.pop(ORIGIN_HEADER, None))
    reason = _text(headers.pop(REASON_HEADER, None))
    parked_at = _moment(headers.pop(PARKED_AT_HEADER, None))
    count = headers.pop(DELIVERIES_HEADER, None)
    deliveries = count if isinstance(count, int) and not isinstance(count, bool) else None
    deaths = headers.get("x-death")
    latest = deaths[0] if isinstance(deaths, list) and deaths else None
    if isinstance(latest, dict):
        origin = origin or _text(latest.get("queue"))
        why = _text(latest.get("reason"))
        if reason is None and why == "delivery_limit":
            reason = f"poison: handed out more than {DELIVERY_LIMIT} times, never settled"
            deliveries = DELIVERY_LIMIT + 1
        elif reason is None:
            reason = f"dead-lettered by RabbitMQ ({why})"
        died = latest.get("time")
        if parked_at is None and isinstance(died, datetime):
            parked_at = died
    return ParkedJob(
        body=message.body,
        origin=origin,
        reason=mask_addresses(reason or "unknown"),
        parked_at=parked_at or now,
        job_id=_job_id(message),
        deliveries=deliveries,
        properties=_properties(message, headers),
    )


def _moment(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    text = _text(value)
    try:
        moment = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    return moment if moment is None or moment.tzinfo is not None else None


def requeued_message(job: ParkedJob) -> aio_pika.Message:
    """The job as its origin queue gets it again: its body and properties, without what
    parking and earlier rounds added."""
    properties = dict(job.properties)
    headers = {
        name: value
        for name, value in job.headers.items()
        if name not in PARKING_HEADERS and name not in ROUTING_HEADERS
    }
    expiration = properties.get("expiration")
    return aio_pika.Message(
        job.body,
        headers=headers,
        content_type=properties.get("content_type"),
        content_encoding=properties.get("content_encoding"),
        delivery_mode=DeliveryMode.PERSISTENT,
        priority=properties.get("priority"),
        correlation_id=properties.get("correlation_id"),
        reply_to=properties.get("reply_to"),
        expiration=expiration / 1000 if isinstance(expiration, int) else None,
        message_id=properties.get("message_id"),
        timestamp=properties.get("timestamp"),
        type=properties.get("type"),
        app_id=properties.get("app_id"),
    )


class DeadLetters:
    """Parked jobs for an operator (`mailer dlq`, the console): act on them one at a time."""

    def __init__(self, parked: ParkedJobs, broker: Callable[[], Awaitable[Broker]]) -> None:
        self._parked = parked
        self._broker = broker

    async def settle(
        self, action: str, refs: Iterable[str] | None
    ) -> AsyncIterator[tuple[ParkedRow, bool]]:
        """Requeue or purge the jobs named (None: every one parked now), yielding each as it
        is done (True) or left in place (False: no known origin queue to requeue it to).
        A job another operator is acting on meanwhile, or gone, is passed over."""
        for row in await self._parked.selected(refs):
            async with self._parked.taking(row.id) as taking:
                job = taking.job
                if job is None:
                    continue
                if action == "requeue":
                    if job.origin not in QUEUE_ROUTES:
                        log.warning(
                            "parked job %s has no known origin queue; left in place", row.ref
                        )
                        taking.keep()
                    else:
                        broker = await self._broker()
                        await broker.publish_message(
                            requeued_message(job), routing_key=job.origin, exchange=""
                        )
            yield row, not taking.kept


class DeadQueue:
    """mailer.dead for `mailer migrate`: the parked jobs it holds are taken to be moved into
    the table (with basic.get, each acknowledged by the caller once recorded, so none is
    handed back), and a mailer.dead an older mailer declared is declared anew."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    async def current(self) -> bool:
        """Whether mailer.dead has the arguments this mailer declares (declared if absent)."""
        return await declare_dead_queue(await self._broker.open_channel())

    async def taken(self) -> AsyncIterator[QueueMessage]:
        """Every message in mailer.dead now, one at a time, for the caller to acknowledge."""
        async with await self._broker.open_channel() as channel:
            queue = await channel.get_queue(DEAD_QUEUE, ensure=False)
            while (message := await queue.get(no_ack=False, fail=False, timeout=10)) is not None:
                yield QueueMessage(message)

    async def replace(self) -> int:
        """Delete mailer.dead and declare it with today's arguments; how many messages went
        with it. Quorum queues cannot be deleted only if empty: the caller empties it first
        and makes sure nothing publishes to it meanwhile."""
        async with await self._broker.open_channel() as channel:
            deleted = await channel.queue_delete(DEAD_QUEUE)
            await channel.declare_queue(
                DEAD_QUEUE, durable=True, arguments=queue_arguments(DEAD_QUEUE)
            )
        self._broker.dead_queue_outdated = False
        return int(getattr(deleted, "message_count", 0) or 0)


@dataclass(frozen=True, slots=True)
class DeadQueueUpgrade:
    """What `mailer migrate` did with mailer.dead."""

    moved: int  # parked jobs moved from it into the table
    replaced: bool  # declared anew, with today's arguments
    busy: tuple[str, ...] = ()  # queues a worker consumes, which kept it from being replaced
    lost: int = 0  # messages that reached it after it was emptied, deleted with it


async def move_dead_queue(broker: Broker, parked: ParkedJobs) -> DeadQueueUpgrade:
    """Move whatever sits in mailer.dead into the table (an upgraded install, or jobs left
    there while no worker ran), and declare it anew if an older mailer declared it without
    a delivery limit. Each message is recorded, then acknowledged: one recorded before (a
    move cut short) is one row still. RabbitMQ deletes a quorum queue whatever it holds,
    so it is replaced only while no worker consumes any mailer queue (nothing parks to it
    then, and nothing is dead-lettered)."""
    dead = DeadQueue(broker)
    current = await dead.current()  # declared, on a fresh install
    moved = await _move(dead, parked)
    if current:
        return DeadQueueUpgrade(moved=moved, replaced=False)
    depths = await queue_depths(broker, [*ROUTES.values(), DEAD_QUEUE])
    busy = tuple(depth.name for depth in depths if depth.consumers)
    if busy:
        return DeadQueueUpgrade(moved=moved, replaced=False, busy=busy)
    moved += await _move(dead, parked)
    lost = await dead.replace()
    if lost:
        log.error("%d message(s) reached mailer.dead while it was declared anew: lost", lost)
    return DeadQueueUpgrade(moved=moved, replaced=True, lost=lost)


async def _move(dead: DeadQueue, parked: ParkedJobs) -> int:
    moved = 0
    async for message in dead.taken():
        await parked.record(parked_from_dead_queue(message, now=datetime.now(UTC)))
        await message.ack()
        moved += 1
    if moved:
        log.info("moved %d parked job(s) from mailer.dead into the database", moved)
    return moved


def origin_label(origin: str | None) -> str:
    """An origin as a metric label: a work queue, else "unknown" (a header may say anything)."""
    return origin if origin in QUEUE_ROUTES else "unknown"
