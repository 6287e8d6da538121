"""`mailer migrate` on an install an older mailer set up: its mailer.dead, declared without a
delivery limit and holding parked jobs, is emptied into the table and declared again."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import asyncpg

from mailer.adapters.topology import DEAD_DELIVERY_LIMIT, DEAD_QUEUE, DELIVERY_LIMIT
from mailer.parts.broker import BrokerConnection
from tests.conftest import StartService
from tests.support.dead_letters import parked, parked_rows
from tests.support.processes import amailer, environment
from tests.support.vhosts import rabbitmqctl
from tests.support.waiting import eventually

OLD_WORK_QUEUE: dict[str, Any] = {
    "x-queue-type": "quorum",
    "x-delivery-limit": DELIVERY_LIMIT,
    "x-dead-letter-exchange": "",
    "x-dead-letter-routing-key": DEAD_QUEUE,
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


def dead_queue_arguments(broker_url: str) -> dict[str, object]:
    vhost = urlsplit(broker_url).path.lstrip("/")
    out = rabbitmqctl(
        "list_queues", "-p", vhost, "name", "arguments", "messages", "--formatter", "json"
    )
    (dead,) = [q for q in json.loads(out) if q["name"] == DEAD_QUEUE]
    assert dead["messages"] == 0
    return {name: value for name, _type, value in dead["arguments"]}


async def old_topology(broker_url: str) -> aio_pika.abc.AbstractRobustConnection:
    """mailer.dead and mailer.receipts as the previous version declared them."""
    connection = await aio_pika.connect_robust(broker_url)
    channel = await connection.channel()
    await channel.declare_queue(DEAD_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    await channel.declare_queue("mailer.receipts", durable=True, arguments=OLD_WORK_QUEUE)
    return connection


async def test_migrate_moves_an_old_mailer_dead_into_the_table_and_declares_it_again(
    config: dict[str, Any], broker_url: str, database_url: str, db: asyncpg.Connection
) -> None:
    """As the previous version left it: mailer.dead a quorum queue with no other argument,
    holding a job a worker parked (reason in headers) and one RabbitMQ dead-lettered as
    poison. Figures: moved 2 of 2; mailer.dead then has a delivery limit of 1000 and
    nothing in it; a second migrate moves nothing and changes nothing."""
    connection = await old_topology(broker_url)
    async with connection:
        channel = await connection.channel()
        receipts = await channel.get_queue("mailer.receipts")
        await channel.default_exchange.publish(
            aio_pika.Message(
                b'{"kind": "receipt", "id": "old-1"}',
                message_id="old-1",
                headers={
                    "x-mailer-origin-queue": "mailer.receipts",
                    "x-mailer-reason": "template: unknown template 'nope'",
                    "x-mailer-parked-at": "2026-11-30T08:00:00+00:00",
                    "x-delivery-count": 4,
                },
            ),
            routing_key=DEAD_QUEUE,
        )
        await channel.default_exchange.publish(
            aio_pika.Message(b'{"poison": true}', message_id="poison-1"),
            routing_key="mailer.receipts",
        )
        for _ in range(DELIVERY_LIMIT + 1):
            message = await eventually(lambda: receipts.get(fail=False))
            await message.nack(requeue=True)
        dead = await channel.get_queue(DEAD_QUEUE)

        async def both_there() -> bool:
            declared = await dead.declare()
            return declared.message_count == 2

        await eventually(both_there)

    env = environment(config)
    result = await amailer("migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert "moved 2 parked job(s) from mailer.dead into the database" in result.stdout
    assert "mailer.dead declared anew, with a delivery limit" in result.stdout
    assert "broker topology declared" in result.stdout
    assert dead_queue_arguments(broker_url) == {
        "x-queue-type": "quorum",
        "x-delivery-limit": DEAD_DELIVERY_LIMIT,
    }
    old, poison = sorted(await parked_rows(db), key=lambda job: job.body)
    assert (old.job_id, old.origin, old.reason, old.parked_at.isoformat(), old.deliveries) == (
        "old-1",
        "mailer.receipts",
        "template: unknown template 'nope'",
        "2026-11-30T08:00:00+00:00",
        None,  # the previous version did not say
    )
    assert (poison.job_id, poison.origin, poison.deliveries) == (
        "poison-1",
        "mailer.receipts",
        DELIVERY_LIMIT + 1,
    )
    assert poison.reason == "poison: handed out more than 20 times, never settled"
    assert "x-death" in poison.headers  # kept to be shown, dropped when requeued

    again = await amailer("migrate", env=env)
    assert again.returncode == 0, again.stderr
    assert "moved" not in again.stdout
    assert len(await parked_rows(db)) == 2
    listed = await amailer("dlq", "list", env=env)
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert len(lines) == 3  # the header and the two jobs
    assert lines[0].split()[:4] == ["REF", "JOB", "ID", "ORIGIN"]
    one_format = re.compile(r"  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC  ")
    assert one_format.search(lines[1]), lines[1]


async def test_a_worker_uses_an_old_mailer_dead_until_migrate_can_declare_it_anew(
    config: dict[str, Any],
    start_service: StartService,
    broker_url: str,
    db: asyncpg.Connection,
) -> None:
    """A rolling upgrade: the new worker starts on the old mailer.dead (no delivery limit)
    and moves what reaches it; `mailer migrate` leaves that queue alone while a worker
    consumes (RabbitMQ would delete whatever it holds), and declares it anew once none
    does. Figures: parked jobs moved 1 of 1, lost 0."""
    connection = await old_topology(broker_url)
    env = environment(config)
    service = await start_service(config)
    assert service.part(BrokerConnection).broker.dead_queue_outdated
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(b"parked by an old worker", headers={"x-mailer-reason": "r"}),
            routing_key=DEAD_QUEUE,
        )
    (job,) = await parked(db, 1)
    assert job.body == b"parked by an old worker"
    kept = await amailer("migrate", env=env)
    assert kept.returncode == 0, kept.stderr
    assert "mailer.dead kept as an older mailer declared it (no delivery limit)" in kept.stderr
    assert "declared anew" not in kept.stdout
    await service.stop()
    again = await amailer("migrate", env=env)
    assert again.returncode == 0, again.stderr
    assert "mailer.dead declared anew, with a delivery limit" in again.stdout
    assert dead_queue_arguments(broker_url)["x-delivery-limit"] == DEAD_DELIVERY_LIMIT
    assert len(await parked_rows(db)) == 1
