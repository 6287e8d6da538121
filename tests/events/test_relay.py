"""The relay publishes the outbox on mailer.events: in order, confirmed, marked, one leader
at a time, taken over when the leader's connection goes, through a broker connection cut."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from mailer.adapters import outbox
from mailer.adapters.broker import Broker
from mailer.config import EventsSettings
from mailer.core.events import Event
from mailer.metrics import Metrics
from mailer.parts.events import EventRelay
from tests.support.events import EventsConsumer, close_broker_connections
from tests.support.waiting import eventually

FAST = EventsSettings(poll_interval=0.05, takeover_interval=0.2, batch=100)


@pytest.fixture
async def broker(broker_url: str) -> AsyncIterator[Broker]:
    broker = Broker(broker_url, name="mailer worker events-test", reconnect_delay=0.2)
    await broker.connect()
    await broker.declare([200])
    yield broker
    await broker.close()


@pytest.fixture
async def consumer(broker_url: str, broker: Broker) -> AsyncIterator[EventsConsumer]:
    consumer = EventsConsumer(broker_url)
    await consumer.start()
    yield consumer
    await consumer.stop()


async def write(database_url: str, events: list[Event]) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await outbox.append(conn, events)
    finally:
        await conn.close()


def deliveries(n: int, account: str = "default") -> list[Event]:
    job = uuid.uuid4()
    return [
        outbox.event(
            "message.delivered",
            account=account,
            job_id=job,
            kind="newsletter",
            list_slug="lucid-news",
            recipient=f"person{i}@example.pl",
        )
        for i in range(n)
    ]


async def test_events_are_published_persistent_under_their_routing_key_and_marked(
    database_url: str, broker: Broker, consumer: EventsConsumer, db: asyncpg.Connection
) -> None:
    written = [*deliveries(30), outbox.event("issue.started", account="acme")]
    await write(database_url, written)
    relay = EventRelay(database_url, broker.publish_event, FAST, Metrics())
    await relay.start()
    try:
        await eventually(consumer.at_least(31))
        await eventually(
            lambda: db.fetchval("SELECT count(*) = 31 FROM events WHERE published_at IS NOT NULL")
        )
    finally:
        await relay.stop()
    assert relay.published == 31
    by_id = {str(e.id): e for e in written}
    for body, key, message_id in zip(
        consumer.arrived, consumer.keys, consumer.message_ids, strict=True
    ):
        assert key == f"{body['account']}.{body['type']}"
        assert message_id == body["id"]
        assert body["recipient"] == by_id[body["id"]].recipient
    assert consumer.keys[-1] == "acme.issue.started"
    assert consumer.duplicates == 0


async def test_one_leader_publishes_and_another_takes_over_when_its_connection_goes(
    database_url: str, broker: Broker, consumer: EventsConsumer
) -> None:
    """Two relays: only the lock holder publishes; its database connection terminated, the
    other leads within the takeover interval (0.2 s here; 1 s by default) plus a reconnect.
    Figures: 0 lost of 400; repeats at most one batch (100), asserted."""
    metrics = [Metrics(), Metrics()]
    relays = [EventRelay(database_url, broker.publish_event, FAST, m) for m in metrics]
    for relay in relays:
        await relay.start()
    try:
        await write(database_url, deliveries(200))
        await eventually(consumer.at_least(200))
        leaders = [r for r in relays if r.leading]
        assert len(leaders) == 1
        leader = leaders[0]
        other = relays[1 - relays.index(leader)]
        assert leader.published == 200 and other.published == 0

        assert leader.conn is not None
        pid = leader.conn.get_server_pid()
        admin = await asyncpg.connect(database_url)
        try:
            cut = time.monotonic()
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        await write(database_url, deliveries(200))
        await eventually(consumer.at_least(400), timeout=20)
        took = time.monotonic() - cut
    finally:
        for relay in relays:
            await relay.stop()
    assert consumer.duplicates <= FAST.batch, consumer.duplicates
    assert took < 5, f"the other relay took {took:.1f}s to publish what followed the cut"


async def test_a_messages_events_arrive_in_the_order_they_happened(
    database_url: str, broker: Broker, consumer: EventsConsumer
) -> None:
    job = uuid.uuid4()
    steps = ["message.deferred", "message.deferred", "message.delivered", "message.bounced"]
    written = []
    for n in range(20):  # 20 messages, their events interleaved as commits would have them
        for step in steps:
            written.append(
                (
                    steps.index(step),
                    outbox.event(
                        step,  # type: ignore[arg-type]
                        job_id=job,
                        kind="newsletter",
                        recipient=f"p{n}@example.pl",
                    ),
                )
            )
    written.sort(key=lambda pair: pair[0])
    for _, event in written:  # each its own commit, in that order
        await write(database_url, [event])
    relay = EventRelay(database_url, broker.publish_event, FAST, Metrics())
    await relay.start()
    try:
        await eventually(consumer.at_least(80))
    finally:
        await relay.stop()
    for n in range(20):
        mine = [b["type"] for b in consumer.arrived if b["recipient"] == f"p{n}@example.pl"]
        assert mine == steps


async def test_the_broker_connection_cut_loses_nothing(
    database_url: str, broker: Broker, consumer: EventsConsumer
) -> None:
    """The relay's broker connection is closed by the broker while events are published:
    0 lost of 1,000; repeats (confirms lost with the connection) at most a batch."""
    relay = EventRelay(database_url, broker.publish_event, FAST, Metrics())
    await relay.start()
    try:

        async def cut() -> int:
            await eventually(consumer.at_least(100))
            return await close_broker_connections("mailer worker events-test")

        _, closed = await asyncio.gather(
            _write_in_steps(database_url, [deliveries(50) for _ in range(20)]), cut()
        )
        assert closed == 1
        await eventually(consumer.at_least(1000), timeout=30)
    finally:
        await relay.stop()
    assert consumer.duplicates <= FAST.batch, consumer.duplicates


async def _write_in_steps(database_url: str, batches: list[list[Event]]) -> None:
    for batch in batches:
        await write(database_url, batch)
        await asyncio.sleep(0.02)


async def test_while_the_broker_is_away_events_are_sequenced_and_then_published_in_order(
    database_url: str, broker_url: str, broker: Broker, consumer: EventsConsumer
) -> None:
    """The broker refuses the relay's connection (the vhost's connection limit set to 0,
    its connection closed): the outbox goes on giving positions, in commit order (what
    webhooks follow), and once the broker takes connections again every event is
    published, in position order. Figures: 0 lost of 300, repeats 0 asserted."""
    vhost = urlsplit(broker_url).path.lstrip("/")
    relay = EventRelay(database_url, broker.publish_event, FAST, Metrics())
    await relay.start()
    reader = await asyncpg.connect(database_url)
    try:
        await write(database_url, deliveries(10))
        await eventually(consumer.at_least(10))
        await asyncio.to_thread(limit_connections, vhost, 0)
        assert await close_broker_connections("mailer worker events-test") == 1
        for _ in range(3):
            await write(database_url, deliveries(100))

        async def sequenced() -> bool:
            return len(await outbox.events_after(reader, "default", 10, 1000)) == 300

        await eventually(sequenced)
        assert consumer.unique == 10
        await asyncio.to_thread(limit_connections, vhost, -1)
        await eventually(consumer.at_least(310), timeout=60)
        order = [e.id for e in await outbox.events_after(reader, "default", 0, 1000)]
    finally:
        await reader.close()
        await relay.stop()
        await asyncio.to_thread(limit_connections, vhost, -1)
    assert [uuid.UUID(b["id"]) for b in consumer.arrived] == order
    assert consumer.duplicates == 0


def limit_connections(vhost: str, limit: int) -> None:
    subprocess.run(
        ["rabbitmqctl", "-q", "set_vhost_limits", "-p", vhost, f'{{"max-connections": {limit}}}'],
        check=True,
        capture_output=True,
        timeout=60,
    )
