"""Topology, publishing with confirms, delay queues, dead-lettering, and consumers that
survive broker faults, on a real RabbitMQ.

Faults are real: the broker closes the worker's connection (`rabbitmqctl close_connection`),
deletes a queue under a consumer (basic.cancel), or a TCP proxy between the worker and the
broker cuts, stalls or blackholes the connection. Each fault test publishes a receipt once the
fault is under way and waits for its bytes at the SMTP server: lost 0, duplicated 0, and the
time to recover is stated in its assert.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
from aio_pika.abc import AbstractIncomingMessage, ExchangeType

from mailer.adapters.broker import Broker
from mailer.adapters.consuming import QueueMessage
from mailer.adapters.dead_letters import parked_from_dead_queue
from mailer.adapters.queues import queue_depths, queue_names
from mailer.adapters.topology import (
    DEAD_DELIVERY_LIMIT,
    DEAD_QUEUE,
    DELIVERY_LIMIT,
    LEGACY_DELAY_EXCHANGE,
    RETRY_EXCHANGE,
    ROUTES,
    delay_queue_name,
)
from mailer.config import build_settings, load_settings
from mailer.errors import ConfigError, TemporaryFailure
from mailer.parts.broker import BrokerConnection
from mailer.service import Service
from tests.conftest import StartService
from tests.support.http import base_url
from tests.support.jobs import encode, receipt
from tests.support.proxy import Proxy
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

RECOVERY_SECONDS = 10.0  # the bound every fault test holds the worker to


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
    limits = {}
    for name in (*ROUTES.values(), DEAD_QUEUE):
        declared = queues[name]["arguments"]
        assert isinstance(declared, list)
        limits[name] = {key: value for key, _type, value in declared}.get("x-delivery-limit")
    assert limits == {**dict.fromkeys(ROUTES.values(), DELIVERY_LIMIT), DEAD_QUEUE: 1000}
    assert DEAD_DELIVERY_LIMIT == 1000  # set, not left to RabbitMQ 4's default of 20
    await broker.declare([200, 400])  # declaring again is harmless


async def test_a_job_routes_by_kind_to_its_queue(broker: Broker) -> None:
    await broker.publish(b'{"kind": "receipt"}', routing_key="receipt", message_id="j1")
    message = await get(broker, "mailer.receipts")
    assert message.body == b'{"kind": "receipt"}'
    assert message.message_id == "j1"
    assert message.content_type == "application/json"
    assert message.delivery_mode == 2  # persistent


async def test_each_kind_lands_in_its_own_queue_and_nowhere_else(broker: Broker) -> None:
    names = queue_names([200, 400])
    for routing_key, queue in ROUTES.items():
        await broker.publish(b"{}", routing_key=routing_key)
        counts = await eventually(partial(_settled_counts, broker, names, queue), timeout=5)
        assert counts == {name: int(name == queue) for name in names}, (routing_key, counts)
        channel = await broker.open_channel()
        await (await channel.get_queue(queue, ensure=False)).purge()


async def test_an_unroutable_publish_is_an_error(broker: Broker) -> None:
    with pytest.raises(TemporaryFailure, match="unroutable"):
        await broker.publish(b"{}", routing_key="no-such-kind")


async def test_retry_later_comes_back_after_the_delay_byte_identical(broker: Broker) -> None:
    body = '{"kind": "receipt", "x": "zażółć"}'.encode()
    await broker.publish(body, routing_key="receipt", headers={"h": "v"})
    original = await get(broker, "mailer.receipts")
    await broker.retry_later(
        QueueMessage(original), queue="mailer.receipts", delay_ms=400, attempt=1
    )
    channel = await broker.open_channel()
    receipts = await channel.get_queue("mailer.receipts", ensure=False)
    assert await receipts.get(no_ack=True, fail=False) is None  # not before the delay
    back = await get(broker, "mailer.receipts")
    assert back.body == body
    assert back.headers["h"] == "v"
    assert back.headers["x-mailer-attempt"] == 1


async def ready_counts(broker: Broker, names: list[str]) -> dict[str, int | None]:
    return {depth.name: depth.ready for depth in await queue_depths(broker, names)}


async def test_a_retry_lands_in_its_own_delay_queue_and_nowhere_else(broker: Broker) -> None:
    """Routing counted where one message lands: each retry is one message, in the delay queue
    of its own tier, whatever the tier (a headers binding on an `x-` key that matched every
    message once put each retry in every delay queue, and the copies multiplied each round)."""
    await broker.declare([200, 400, 60_000, 3_600_000])
    names = queue_names([200, 400, 60_000, 3_600_000])
    for delay_ms in (60_000, 3_600_000):
        await broker.publish(b'{"kind": "receipt"}', routing_key="receipt", message_id="j1")
        original = await get(broker, "mailer.receipts")
        await broker.retry_later(
            QueueMessage(original), queue="mailer.receipts", delay_ms=delay_ms, attempt=3
        )
        target = delay_queue_name(delay_ms)
        counts = await eventually(partial(_settled_counts, broker, names, target), timeout=5)
        assert counts == {name: int(name == target) for name in names}, (
            f"one retry of {delay_ms} ms: {counts}"
        )
        channel = await broker.open_channel()
        await (await channel.get_queue(delay_queue_name(delay_ms), ensure=False)).purge()


async def _settled_counts(
    broker: Broker, names: list[str], expected: str
) -> dict[str, int | None] | None:
    counts = await ready_counts(broker, names)
    return counts if counts[expected] == 1 else None


async def test_a_retry_with_no_delay_queue_of_its_tier_is_an_error_not_a_loss(
    broker: Broker,
) -> None:
    await broker.publish(b'{"kind": "receipt"}', routing_key="receipt")
    original = await get(broker, "mailer.receipts")
    with pytest.raises(TemporaryFailure, match="unroutable"):
        await broker.retry_later(
            QueueMessage(original), queue="mailer.receipts", delay_ms=999, attempt=1
        )


async def test_declare_removes_the_bindings_that_matched_every_retry(
    broker: Broker, broker_url: str
) -> None:
    """An install declared by an older version has `mailer.delay` bound with plain `all`
    on the delay header: declare deletes that exchange, so nothing routes through it."""
    channel = await broker.open_channel()
    legacy = await channel.declare_exchange(
        LEGACY_DELAY_EXCHANGE, ExchangeType.HEADERS, durable=True
    )
    for delay_ms in (200, 400):
        queue = await channel.get_queue(delay_queue_name(delay_ms), ensure=False)
        await queue.bind(legacy, arguments={"x-match": "all", "x-mailer-delay": str(delay_ms)})
    await broker.declare([200, 400])
    exchanges = subprocess.run(
        ["rabbitmqctl", "-q", "list_exchanges", "-p", broker_url.rsplit("/", 1)[1], "name"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert LEGACY_DELAY_EXCHANGE not in exchanges
    assert RETRY_EXCHANGE in exchanges


async def test_park_keeps_the_body_and_says_where_from_and_why(broker: Broker) -> None:
    body = b"\x00not json at all"
    await broker.publish(body, routing_key="receipt", message_id="m-1")
    original = await get(broker, "mailer.receipts")
    await broker.park(
        QueueMessage(original), origin="mailer.receipts", reason="body is not JSON", deliveries=3
    )
    parked = await get(broker, DEAD_QUEUE)
    assert parked.body == body
    assert parked.message_id == "m-1"
    assert parked.headers["x-mailer-origin-queue"] == "mailer.receipts"
    assert parked.headers["x-mailer-reason"] == "body is not JSON"
    assert parked.headers["x-mailer-parked-at"]
    assert parked.headers["x-mailer-deliveries"] == 3


async def test_a_message_that_keeps_coming_back_is_parked_as_poison(broker: Broker) -> None:
    await broker.publish(b'{"poison": true}', routing_key="receipt")
    channel = await broker.open_channel()
    queue = await channel.get_queue("mailer.receipts", ensure=False)
    for _ in range(DELIVERY_LIMIT + 1):
        message = await eventually(lambda: queue.get(fail=False))
        await message.nack(requeue=True)  # as if the worker crashed on it
    parked = await get(broker, DEAD_QUEUE)
    job = parked_from_dead_queue(QueueMessage(parked), now=datetime.now(UTC))
    assert parked.body == b'{"poison": true}'
    assert job.origin == "mailer.receipts"
    assert job.reason == "poison: handed out more than 20 times, never settled"
    assert job.deliveries == DELIVERY_LIMIT + 1


async def test_several_urls_connect_to_the_first_live_node(broker_url: str) -> None:
    """A dead node first in the list is passed over at connect time."""
    dead = urlunsplit(urlsplit(broker_url)._replace(netloc="guest:guest@127.0.0.1:1"))
    broker = Broker([dead, broker_url])
    await broker.connect()
    try:
        assert broker.node == f"127.0.0.1:{urlsplit(broker_url).port or 5672}"
        await broker.declare([])
        await broker.publish(b"{}", routing_key="receipt")
    finally:
        await broker.close()


# Consumers that come back: a worker against the test's database and SMTP server.


def fault_config(config: dict[str, Any], url: str | None = None) -> dict[str, Any]:
    """Short heartbeat and reconnect delays, so a test sees recovery in seconds."""
    config["broker"].update(heartbeat=2, reconnect_delay=0.2, max_reconnect_delay=1)
    if url is not None:
        config["broker"]["url"] = url
    return config


def via(proxy: Proxy, broker_url: str) -> str:
    parts = urlsplit(broker_url)
    return urlunsplit(parts._replace(netloc=f"guest:guest@127.0.0.1:{proxy.port}"))


async def rabbitmqctl_out(*args: str) -> str:
    """rabbitmqctl in a thread: a second of a blocked loop would miss the worker's heartbeats."""
    done = await asyncio.to_thread(
        subprocess.run,
        ["rabbitmqctl", "-q", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout


async def worker_connections(service: Service) -> list[str]:
    """The worker's connections (Erlang pids, as close_connection takes them), found by the
    connection_name in their client properties."""
    wanted = ["connection_name", "longstr", f"mailer worker {service.worker_id}"]
    listed = json.loads(
        await rabbitmqctl_out(
            "list_connections", "name", "client_properties", "--formatter", "json"
        )
    )
    names = {c["name"] for c in listed if wanted in c["client_properties"]}
    pids = await rabbitmqctl_out("--no-table-headers", "list_connections", "pid", "name")
    return [
        pid
        for pid, _, name in (line.partition("\t") for line in pids.splitlines())
        if name in names
    ]


async def consumer_counts(broker_url: str) -> dict[str, int]:
    vhost = urlsplit(broker_url).path.lstrip("/")
    out = await rabbitmqctl_out(
        "list_queues", "-p", vhost, "name", "consumers", "--formatter", "json"
    )
    return {q["name"]: q["consumers"] for q in json.loads(out) if q["name"] in QUEUE_NAMES}


QUEUE_NAMES = tuple(ROUTES.values())


async def consumed_once(broker_url: str) -> None:
    """What the broker reports (its figures lag by a few seconds): one consumer per queue."""

    async def probe() -> bool:
        return await consumer_counts(broker_url) == dict.fromkeys(QUEUE_NAMES, 1)

    await eventually(probe, timeout=20, interval=0.5)


async def the_worker_connection(service: Service) -> str:
    async def probe() -> list[str]:
        return await worker_connections(service)

    (name,) = await eventually(probe, interval=0.5)
    return name


async def all_consuming(service: Service) -> bool:
    return service.part(BrokerConnection).broker.ready


async def receipt_after_fault(portal: Broker, smtp_server: SmtpServer, started: float) -> float:
    """Publish a receipt now; wait for its bytes at the SMTP server; seconds since `started`."""
    address = f"after-{time.monotonic_ns()}@example.pl"
    await portal.publish(
        encode(receipt(to={"email": address, "name": "Po"})), routing_key="receipt"
    )

    async def arrived() -> bool:
        return bool(smtp_server.to(address))

    await eventually(arrived, timeout=RECOVERY_SECONDS + 20)
    (message,) = smtp_server.to(address)  # exactly once
    return message.at - started


async def readyz(service: Service) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(base_url(service) + "/readyz") as response,
    ):
        return response.status, await response.json()


async def test_consumers_come_back_after_the_broker_closes_the_connection(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    broker_url: str,
) -> None:
    service = await start_service(fault_config(config))
    connection = await the_worker_connection(service)

    started = time.monotonic()
    await rabbitmqctl_out("close_connection", connection, "test: connection closed")
    recovered = await receipt_after_fault(portal, smtp_server, started)
    assert recovered < RECOVERY_SECONDS, f"lost 0, duplicated 0; recovered in {recovered:.1f}s"
    await consumed_once(broker_url)
    assert await the_worker_connection(service) != connection  # a new one, not the old one
    status, body = await readyz(service)
    assert (status, body["status"]) == (200, "ready"), body
    assert body["checks"]["consumers"]["queues"] == dict.fromkeys(
        ("mailer.receipts", "mailer.newsletters", "mailer.subscriptions", "mailer.dead"), True
    )


async def test_a_consumer_the_broker_cancels_consumes_again(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    broker_url: str,
) -> None:
    """Deleting the queue under the worker sends it basic.cancel; it declares and consumes anew."""
    service = await start_service(fault_config(config))
    vhost = urlsplit(broker_url).path.lstrip("/")
    started = time.monotonic()
    await rabbitmqctl_out("delete_queue", "-p", vhost, "mailer.receipts")

    async def back() -> bool:
        return (await consumer_counts(broker_url)).get("mailer.receipts") == 1

    await eventually(back, timeout=RECOVERY_SECONDS, interval=0.5)
    recovered = await receipt_after_fault(portal, smtp_server, started)
    assert recovered < RECOVERY_SECONDS, f"lost 0, duplicated 0; recovered in {recovered:.1f}s"
    await eventually(lambda: all_consuming(service))


async def test_a_cut_connection_is_replaced(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    broker_url: str,
) -> None:
    async with Proxy(urlsplit(broker_url).port or 5672) as proxy:
        service = await start_service(fault_config(config, via(proxy, broker_url)))
        started = time.monotonic()
        proxy.cut()
        recovered = await receipt_after_fault(portal, smtp_server, started)
        assert recovered < RECOVERY_SECONDS, f"lost 0, duplicated 0; recovered in {recovered:.1f}s"
        await consumed_once(broker_url)
        await eventually(lambda: all_consuming(service))


async def test_a_stalled_connection_is_detected_by_heartbeat_and_replaced(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    broker_url: str,
) -> None:
    """No byte passes either way: the heartbeat (2 s here) notices, /readyz says so, and a
    receipt published during the stall is delivered once when the network is back."""
    async with Proxy(urlsplit(broker_url).port or 5672) as proxy:
        service = await start_service(fault_config(config, via(proxy, broker_url)))
        started = time.monotonic()
        proxy.stall()
        address = "during-stall@example.pl"
        await portal.publish(
            encode(receipt(to={"email": address, "name": "Ktoś"})), routing_key="receipt"
        )

        async def noticed() -> bool:
            status, body = await readyz(service)
            return status == 503 and body["checks"]["broker"]["ok"] is False

        await eventually(noticed, timeout=20, interval=0.2)
        detected = time.monotonic() - started
        assert detected < 15, (
            f"stall detected after {detected:.1f}s (heartbeat 2 s: 9 s of silence)"
        )
        assert not smtp_server.to(address)
        healed = time.monotonic()
        proxy.heal()

        async def delivered() -> bool:
            return bool(smtp_server.to(address))

        await eventually(delivered, timeout=RECOVERY_SECONDS + 20)
        recovered = time.monotonic() - healed
        assert recovered < RECOVERY_SECONDS, f"recovered {recovered:.1f}s after the stall ended"
        recovered_new = await receipt_after_fault(portal, smtp_server, healed)
        assert recovered_new < RECOVERY_SECONDS
        assert len(smtp_server.to(address)) == 1, "lost 0, duplicated 0"
        await eventually(lambda: all_consuming(service))


async def test_a_blackholed_connection_is_given_up_and_replaced(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    broker_url: str,
) -> None:
    """Bytes vanish and new connections hang: not ready meanwhile; back once it lifts."""
    async with Proxy(urlsplit(broker_url).port or 5672) as proxy:
        service = await start_service(fault_config(config, via(proxy, broker_url)))
        proxy.blackhole()

        async def noticed() -> bool:
            return (await readyz(service))[0] == 503

        await eventually(noticed, timeout=20, interval=0.2)
        await asyncio.sleep(1)  # a reconnection attempt or two hang in the hole
        assert (await readyz(service))[0] == 503
        healed = time.monotonic()
        proxy.heal()
        recovered = await receipt_after_fault(portal, smtp_server, healed)
        assert recovered < RECOVERY_SECONDS + 10, (
            f"lost 0, duplicated 0; recovered {recovered:.1f}s after the blackhole lifted "
            "(an attempt begun inside it waits out its 10 s connect timeout)"
        )
        await eventually(lambda: all_consuming(service))
        await consumed_once(broker_url)


def test_broker_url_takes_one_node_or_several() -> None:
    one = build_settings({"broker": {"url": "amqp://u:p@h1:5672/v"}}).broker
    listed = build_settings({"broker": {"url": ["amqp://h1/v", "amqps://h2:5671/v"]}}).broker
    assert one.urls() == ["amqp://u:p@h1:5672/v"]
    assert listed.urls() == ["amqp://h1/v", "amqps://h2:5671/v"]
    env_settings, _ = load_settings(
        environ={"MAILER_BROKER_URL": "amqp://h1/v, amqp://h2/v amqp://h3/v"}
    )
    assert env_settings.broker.urls() == ["amqp://h1/v", "amqp://h2/v", "amqp://h3/v"]
    for bad, says in (
        ("http://h1/", "must start with amqp:// or amqps://"),
        (["amqp://h1/", "amqp://:5672/"], "URL 2 has no host"),
        ([], "needs at least one"),
    ):
        with pytest.raises(ConfigError) as error:
            build_settings({"broker": {"url": bad}})
        assert str(error.value).startswith("config: [broker] url (MAILER_BROKER_URL): ")
        assert says in str(error.value)
