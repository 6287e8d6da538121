"""Parked jobs in PostgreSQL and back to RabbitMQ, against both for real: recorded once
however often they arrive, requeued with their properties, never lost or doubled by a
requeue that fails or races another."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage

from mailer.adapters.broker import Broker
from mailer.adapters.consuming import QueueMessage
from mailer.adapters.dead_letters import DeadLetters, parked_from_dead_queue, requeued_message
from mailer.adapters.parked import ParkedJobs
from mailer.errors import TemporaryFailure
from mailer.worker.parking import Parking
from tests.support.dead_letters import parked_rows
from tests.support.waiting import eventually

NOW = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)


@pytest.fixture
async def broker(broker_url: str) -> AsyncIterator[Broker]:
    broker = Broker(broker_url, publish_timeout=5)
    await broker.connect()
    await broker.declare([200])
    yield broker
    await broker.close()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def take(broker: Broker, queue_name: str) -> AbstractIncomingMessage:
    channel = await broker.open_channel()
    queue = await channel.get_queue(queue_name, ensure=False)

    async def probe() -> AbstractIncomingMessage | None:
        return await queue.get(no_ack=True, fail=False)

    return await eventually(probe)


async def depth(broker: Broker, queue_name: str) -> int:
    channel = await broker.open_channel()
    try:
        queue = await channel.declare_queue(queue_name, passive=True)
        return queue.declaration_result.message_count or 0
    finally:
        await channel.close()


PROPERTIES: dict[str, Any] = {
    "content_type": "application/json",
    "content_encoding": "identity",
    "message_id": "job-\x00-1",  # a NUL, which PostgreSQL text cannot hold
    "correlation_id": "order-42",
    "type": "receipt",
    "app_id": "portal",
    "priority": 3,
    "timestamp": datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
}
HEADERS: dict[str, Any] = {
    "tenant": "lucid",
    "count": 7,
    "nested": {"a": [1, "b", True]},
    "raw": bytearray(b"\xff\xfe not UTF-8"),
}


async def test_a_parked_job_is_requeued_with_its_body_and_properties(
    broker: Broker, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    body = b'{"kind": "receipt", "x": "za\xc5\xbc\xc3\xb3\xc5\x82\xc4\x87"}'
    await broker.publish_message(
        aio_pika.Message(body, headers=HEADERS, **PROPERTIES), routing_key="receipt"
    )
    parked = ParkedJobs(pool)
    parking = Parking(parked, broker, clock=lambda: NOW)
    await parking.park(
        QueueMessage(await take(broker, "mailer.receipts")), origin="mailer.receipts", reason="r"
    )
    (row,) = await parked_rows(db)
    assert (row.body, row.origin, row.reason, row.parked_at) == (body, "mailer.receipts", "r", NOW)
    assert row.deliveries == 1
    assert row.job_id == "job-\ufffd-1"  # shown and typed without the NUL

    dead = DeadLetters(parked, lambda: _ready(broker))
    settled = [(r.ref, done) async for r, done in dead.settle("requeue", [row.ref])]
    assert settled == [(row.ref, True)]
    back = await take(broker, "mailer.receipts")
    assert back.body == body
    assert {name: getattr(back, name) for name in PROPERTIES} == PROPERTIES
    headers = dict(back.headers)
    assert headers.pop("x-delivery-count") == 0  # the queue's own count starts again
    assert headers == HEADERS  # nothing of parking added, nothing of the job lost
    assert back.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert await parked_rows(db) == []


async def _ready(broker: Broker) -> Broker:
    return broker


async def test_the_same_message_recorded_twice_is_one_row(
    broker: Broker, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    """A move from mailer.dead cut between its record and its ack comes again: one row."""
    await broker.publish(
        b"{}", routing_key="mailer.dead", exchange="", headers={"x-mailer-reason": "r"}
    )
    message = await take(broker, "mailer.dead")
    parked = ParkedJobs(pool)
    job = parked_from_dead_queue(QueueMessage(message), now=NOW)
    assert await parked.record(job) is True
    assert await parked.record(job) is False
    assert len(await parked_rows(db)) == 1


async def test_two_operators_requeueing_one_job_at_once_send_it_once(
    broker: Broker, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    """Fault: 8 requeues of the same job at the same moment (the row is locked while its
    publish is confirmed). Figures: copies in the queue 1, rows left 0."""
    await broker.publish(b'{"n": 1}', routing_key="receipt")
    parked = ParkedJobs(pool)
    await Parking(parked, broker, clock=lambda: NOW).park(
        QueueMessage(await take(broker, "mailer.receipts")), origin="mailer.receipts", reason="r"
    )
    (row,) = await parked_rows(db)
    dead = DeadLetters(parked, lambda: _ready(broker))

    async def requeue() -> list[bool]:
        return [done async for _, done in dead.settle("requeue", [row.ref])]

    results = await asyncio.gather(*(requeue() for _ in range(8)))
    assert sorted(map(len, results)) == [0] * 7 + [1], results
    assert await depth(broker, "mailer.receipts") == 1
    assert await parked_rows(db) == []


async def test_a_requeued_job_parked_again_before_the_requeue_ends_is_kept(
    broker: Broker, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    """Fault: the worker takes a requeued (still invalid) job and parks it again while the
    requeue that sent it has not finished. Figures: rows after 1 of 1 (before: 0, the job
    lost: the second park met the old row and was dropped as a repeat, then the old row
    was deleted)."""
    await broker.publish(b'{"n": 3}', routing_key="receipt")
    parked = ParkedJobs(pool)
    parking = Parking(parked, broker, clock=lambda: NOW)
    await parking.park(
        QueueMessage(await take(broker, "mailer.receipts")), origin="mailer.receipts", reason="r"
    )
    ((row_id,),) = await db.fetch("SELECT id FROM parked_jobs")
    async with parked.taking(row_id) as taking:
        assert taking.job is not None
        await broker.publish_message(
            requeued_message(taking.job), routing_key="mailer.receipts", exchange=""
        )
        again = QueueMessage(await take(broker, "mailer.receipts"))
        parked_again = asyncio.create_task(
            parking.park(again, origin="mailer.receipts", reason="still invalid")
        )
        await asyncio.sleep(0.3)  # the requeue not yet ended
    await asyncio.wait_for(parked_again, 10)
    rows = await parked_rows(db)
    assert [(r.body, r.reason) for r in rows] == [(b'{"n": 3}', "still invalid")]


async def test_a_requeue_the_broker_refuses_keeps_the_job(
    broker: Broker, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    """Fault: the origin queue is gone (deleted), so the publish is returned unroutable.
    Figures: rows kept 1 of 1; then, with the queue back, requeued and delivered 1."""
    await broker.publish(b'{"n": 2}', routing_key="receipt")
    parked = ParkedJobs(pool)
    await Parking(parked, broker, clock=lambda: NOW).park(
        QueueMessage(await take(broker, "mailer.receipts")), origin="mailer.receipts", reason="r"
    )
    (row,) = await parked_rows(db)
    channel = await broker.open_channel()
    await channel.queue_delete("mailer.receipts")
    await channel.close()
    dead = DeadLetters(parked, lambda: _ready(broker))
    with pytest.raises(TemporaryFailure, match="unroutable"):
        async for _ in dead.settle("requeue", None):
            pass
    assert [r.id for r in await parked_rows(db)] == [row.id]
    await broker.declare([200])
    assert [done async for _, done in dead.settle("requeue", None)] == [True]
    assert (await take(broker, "mailer.receipts")).body == b'{"n": 2}'
    assert await parked_rows(db) == []


async def test_a_job_with_no_known_origin_is_left_parked_and_can_be_purged(
    broker: Broker, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    await broker.publish(b"lost", routing_key="mailer.dead", exchange="")
    parked = ParkedJobs(pool)
    await parked.record(
        parked_from_dead_queue(QueueMessage(await take(broker, "mailer.dead")), now=NOW)
    )
    (row,) = await parked_rows(db)
    assert (row.origin, row.reason) == (None, "unknown")
    dead = DeadLetters(parked, lambda: _ready(broker))
    assert [done async for _, done in dead.settle("requeue", None)] == [False]
    assert len(await parked_rows(db)) == 1
    assert [done async for _, done in dead.settle("purge", [row.ref])] == [True]
    assert await parked_rows(db) == []
