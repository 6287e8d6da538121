"""Events through the faults of the cluster recipes: the RabbitMQ node holding the portal's
events queue stops mid-issue; the PostgreSQL primary fails over mid-issue. A consumer
counting by event id sees every event the outbox holds: 0 missing; repeats counted and
bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aio_pika
import asyncpg
import pytest

from mailer.adapters import database
from mailer.adapters.broker import Broker
from mailer.config import EventsSettings
from mailer.parts.events import EventRelay
from tests.cluster.conftest import Cluster
from tests.cluster.test_failover import cluster_config
from tests.conftest import StartService
from tests.support.events import EventsConsumer
from tests.support.jobs import encode
from tests.support.newsletters import issue, outcomes, people, subscribe, until_state
from tests.support.postgres import PostgresPair, make_pair
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(300)
PEOPLE = 1000
REPEAT_BOUND = EventsSettings().batch  # at most one batch in flight when a publish fails
QUEUE = "portal.events"


async def declare_portal_queue(url: str) -> None:
    """The portal's quorum queue, declared through `url`'s node: its leader is there."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            "mailer.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(
            QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(exchange, routing_key="#")
    finally:
        await connection.close()


async def outbox_ids(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        return {r["id"] for r in await conn.fetch("SELECT id::text FROM events")}
    finally:
        await conn.close()


async def test_the_node_leading_the_events_queue_stops_mid_issue(
    cluster: Cluster,
    config: dict[str, Any],
    start_service: StartService,
    smtp_server: SmtpServer,
    database_url: str,
    db: asyncpg.Connection,
) -> None:
    """1,000 subscribers; the portal's events queue is led by node 3; once 200 events have
    arrived node 3 stops. The relay's publishes wait for a new leader (or time out and are
    published again). Figures, printed and asserted: 0 missing; repeats at most one relay
    batch (500); the time from the stop to the next event arriving."""
    await asyncio.to_thread(cluster.ensure_all_running)
    vhost = await asyncio.to_thread(cluster.new_vhost)
    await subscribe(database_url, people(PEOPLE, domain="news.example.pl"))
    smtp_server.data_delay = 0.002
    await declare_portal_queue(cluster.urls(vhost, (3,))[0])
    assert await asyncio.to_thread(cluster.leader, vhost, QUEUE, 1) == 3
    consumer = EventsConsumer(cluster.urls(vhost, (1,))[0], queue=QUEUE)
    await consumer.start()
    config = cluster_config(config, cluster, vhost)
    config["broker"]["url"] = ",".join(cluster.urls(vhost, (1, 2, 3)))
    config["events"] = {"poll_interval": 0.05, "takeover_interval": 0.2}
    service = await start_service(config)
    portal = Broker(cluster.urls(vhost, (1, 2)), publish_timeout=10)
    await portal.connect()
    try:
        job = issue()
        await portal.publish(encode(job), routing_key="newsletter")
        await eventually(consumer.at_least(200), timeout=60)
        before = consumer.unique
        stopped = time.monotonic()
        await asyncio.to_thread(cluster.stop, 3)
        await eventually(consumer.at_least(before + 1), timeout=60)
        resumed = time.monotonic() - stopped
        await until_state(db, job["id"], "done", timeout=120)
        assert await outcomes(db, job["id"]) == {"sent": PEOPLE}
        written = await outbox_ids(database_url)

        async def all_arrived() -> bool:
            return written <= set(consumer.counts)

        await eventually(all_arrived, timeout=90)
        figures = (
            f"{len(written)} events, 0 missing, {consumer.duplicates} repeats (bound"
            f" {REPEAT_BOUND}); events arriving again {resumed:.1f}s after node 3 stopped"
        )
        print("\n" + figures)
        assert consumer.duplicates <= REPEAT_BOUND, figures
        assert service.runs(EventRelay)
    finally:
        await consumer.stop()
        await portal.close()
        await asyncio.to_thread(cluster.ensure_all_running)


@pytest.fixture
def pg_pair() -> Iterator[PostgresPair]:
    pair = make_pair()
    yield pair
    pair.close()


async def test_the_database_fails_over_mid_issue(
    pg_pair: PostgresPair,
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    broker_url: str,
) -> None:
    """The recipe of test_database_failover: mid-issue the primary is fenced read-only,
    stops 2 s later, and a second after that the standby is promoted. The relay loses its
    lock's connection and takes the outbox again on the new primary. Figures, printed and
    asserted: every event of the new primary's outbox arrives (0 missing), repeats at most
    one relay batch (500); the time from the promotion to the issue's last event."""
    await pg_pair.wait_streaming()
    url = pg_pair.url("mailer_events")
    await database.migrate(url)
    audience = people(400)
    await subscribe(url, audience)
    smtp_server.data_delay = 0.03
    config["database"] = {"url": url, "pool_size": 4}
    config["newsletter"] = {"chunk_size": 40, "pool_size": 4}
    config["events"] = {"poll_interval": 0.05, "takeover_interval": 0.2}
    consumer = EventsConsumer(broker_url)
    await consumer.start()
    await start_service(config)
    job = issue()
    try:
        await portal.publish(encode(job), routing_key="newsletter")
        await eventually(consumer.at_least(60), timeout=30)
        await pg_pair.fence_primary()
        await asyncio.sleep(2)
        pg_pair.stop_primary()
        await asyncio.sleep(1)
        pg_pair.promote()
        promoted = time.monotonic()
        new_url = pg_pair.single_url(pg_pair.standby_port, "mailer_events")
        new = await asyncpg.connect(new_url)
        try:
            await until_state(new, job["id"], "done", timeout=90)
            assert await outcomes(new, job["id"]) == {"sent": len(audience)}
        finally:
            await new.close()
        written = await outbox_ids(new_url)

        async def all_arrived() -> bool:
            return written <= set(consumer.counts)

        await eventually(all_arrived, timeout=60)
        caught_up = time.monotonic() - promoted
        delivered = consumer.of_type("message.delivered")
        figures = (
            f"{len(written)} events, 0 missing, {consumer.duplicates} repeats (bound"
            f" {REPEAT_BOUND}); the last arrived {caught_up:.1f}s after the promotion"
        )
        print("\n" + figures)
        assert len({e["recipient"] for e in delivered}) == len(audience), figures
        assert consumer.duplicates <= REPEAT_BOUND, figures
    finally:
        await consumer.stop()
