"""Topology, publishing with confirms, delay queues and dead-lettering on a real RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractIncomingMessage

from mailer.adapters.broker import (
    DEAD_QUEUE,
    DELIVERY_LIMIT,
    ROUTES,
    Broker,
    DeadLetters,
    body_ref,
    delay_queue_name,
    parked_view,
)
from mailer.errors import TemporaryFailure
from tests.support.waiting import eventually


@pytest.fixture
async def broker(broker_url: str) -> AsyncIterator[Broker]:
    broker = Broker(broker_url, publish_timeout=5)
    await broker.connect()
    await broker.declare([200, 400])
    yield broker
    await broker.close()


async def get(broker: Broker, queue_name: str, timeout: float = 5) -> AbstractIncomingMessage:
    channel = await broker.open_channel()
    queue = await channel.get_queue(queue_name, ensure=False)

    async def probe() -> AbstractIncomingMessage | None:
        return await queue.get(no_ack=True, fail=False)

    return await eventually(probe, timeout=timeout)


def queue_list(broker_url: str) -> dict[str, dict[str, object]]:
    vhost = broker_url.rsplit("/", 1)[1]
    out = subprocess.run(
        [
            "rabbitmqctl",
            "-q",
            "list_queues",
            "-p",
            vhost,
            "name",
            "type",
            "arguments",
            "--formatter",
            "json",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {q["name"]: q for q in json.loads(out)}


async def test_topology_is_quorum_queues_with_a_delivery_limit(
    broker: Broker, broker_url: str
) -> None:
    queues = queue_list(broker_url)
    assert set(queues) == {
        *ROUTES.values(),
        DEAD_QUEUE,
        delay_queue_name(200),
        delay_queue_name(400),
    }
    assert {q["type"] for q in queues.values()} == {"quorum"}
    arguments = queues["mailer.receipts"]["arguments"]
    assert isinstance(arguments, list)
    receipts = {name: value for name, _type, value in arguments}
    assert receipts["x-delivery-limit"] == DELIVERY_LIMIT
    assert receipts["x-dead-letter-routing-key"] == DEAD_QUEUE
    await broker.declare([200, 400])  # declaring again is harmless


async def test_a_job_routes_by_kind_to_its_queue(broker: Broker) -> None:
    await broker.publish(b'{"kind": "receipt"}', routing_key="receipt", message_id="j1")
    message = await get(broker, "mailer.receipts")
    assert message.body == b'{"kind": "receipt"}'
    assert message.message_id == "j1"
    assert message.content_type == "application/json"
    assert message.delivery_mode == 2  # persistent


async def test_an_unroutable_publish_is_an_error(broker: Broker) -> None:
    with pytest.raises(TemporaryFailure, match="unroutable"):
        await broker.publish(b"{}", routing_key="no-such-kind")


async def test_retry_later_comes_back_after_the_delay_byte_identical(broker: Broker) -> None:
    body = '{"kind": "receipt", "x": "zażółć"}'.encode()
    await broker.publish(body, routing_key="receipt", headers={"h": "v"})
    original = await get(broker, "mailer.receipts")
    await broker.retry_later(original, queue="mailer.receipts", delay_ms=400, attempt=1)
    channel = await broker.open_channel()
    receipts = await channel.get_queue("mailer.receipts", ensure=False)
    assert await receipts.get(no_ack=True, fail=False) is None  # not before the delay
    back = await get(broker, "mailer.receipts")
    assert back.body == body
    assert back.headers["h"] == "v"
    assert back.headers["x-mailer-attempt"] == 1


async def test_park_keeps_the_body_and_says_where_from_and_why(broker: Broker) -> None:
    body = b"\x00not json at all"
    await broker.publish(body, routing_key="receipt", message_id="m-1")
    original = await get(broker, "mailer.receipts")
    await broker.park(original, origin="mailer.receipts", reason="body is not JSON")
    parked = await get(broker, DEAD_QUEUE)
    assert parked.body == body
    assert parked.message_id == "m-1"
    assert parked.headers["x-mailer-origin-queue"] == "mailer.receipts"
    assert parked.headers["x-mailer-reason"] == "body is not JSON"
    assert parked.headers["x-mailer-parked-at"]


async def test_a_message_that_keeps_coming_back_is_parked_as_poison(broker: Broker) -> None:
    await broker.publish(b'{"poison": true}', routing_key="receipt")
    channel = await broker.open_channel()
    queue = await channel.get_queue("mailer.receipts", ensure=False)
    for _ in range(DELIVERY_LIMIT + 1):
        message = await eventually(lambda: queue.get(fail=False))
        await message.nack(requeue=True)  # as if the worker crashed on it
    parked = await get(broker, DEAD_QUEUE)
    view = parked_view(parked)
    assert parked.body == b'{"poison": true}'
    assert view.origin == "mailer.receipts"
    assert view.reason.startswith("poison")


async def test_dead_letters_list_requeue_and_purge(broker: Broker) -> None:
    for n in range(3):
        await broker.publish(f'{{"n": {n}}}'.encode(), routing_key="receipt", message_id=f"job-{n}")
        await broker.park(
            await get(broker, "mailer.receipts"), origin="mailer.receipts", reason=f"reason {n}"
        )
    dead = DeadLetters(broker)
    shown = await dead.show(limit=10)
    assert [(v.job_id, v.reason) for v in shown] == [
        ("job-0", "reason 0"),
        ("job-1", "reason 1"),
        ("job-2", "reason 2"),
    ]
    assert len(await dead.show(limit=10)) == 3  # looking does not take them away

    requeued = await dead.requeue({"job-1"})
    assert [v.job_id for v in requeued] == ["job-1"]
    back = await get(broker, "mailer.receipts")
    assert back.body == b'{"n": 1}'
    assert "x-mailer-reason" not in back.headers

    purged = await dead.purge({body_ref(b'{"n": 0}')})
    assert [v.job_id for v in purged] == ["job-0"]
    await asyncio.sleep(0.1)
    assert [v.job_id for v in await dead.show(limit=10)] == ["job-2"]
