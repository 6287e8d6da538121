"""A portal's consumer of mailer.events for the tests: a quorum queue of its own bound to the
exchange, counting what arrives by event id (the repeats too), in arrival order."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection, ExchangeType

from mailer.adapters.topology import EVENTS_EXCHANGE


class EventsConsumer:
    def __init__(self, broker_url: str, *, binding: str = "#", queue: str = "portal.events"):
        self._url = broker_url
        self._binding = binding
        self._queue = queue
        self._connection: AbstractRobustConnection | None = None
        self.arrived: list[dict[str, Any]] = []  # every delivery, repeats included
        self.keys: list[str] = []  # the routing key of each
        self.message_ids: list[str | None] = []
        self.counts: Counter[str] = Counter()

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self._url, client_properties={"connection_name": "test portal events"}
        )
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=500)
        exchange = await channel.declare_exchange(EVENTS_EXCHANGE, ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(
            self._queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(exchange, routing_key=self._binding)
        await queue.consume(self._take)

    async def _take(self, message: AbstractIncomingMessage) -> None:
        body = json.loads(message.body)
        self.arrived.append(body)
        self.keys.append(message.routing_key or "")
        self.message_ids.append(message.message_id)
        self.counts[body["id"]] += 1
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        await message.ack()

    @property
    def unique(self) -> int:
        return len(self.counts)

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.counts.values())

    def at_least(self, n: int) -> Callable[[], Awaitable[bool]]:
        """A probe for `eventually`: at least `n` distinct events arrived."""

        async def probe() -> bool:
            return self.unique >= n

        return probe

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        seen: set[str] = set()
        found = []
        for body in self.arrived:
            if body["type"] == type_ and body["id"] not in seen:
                seen.add(body["id"])
                found.append(body)
        return found

    async def stop(self) -> None:
        if self._connection is not None:
            await self._connection.close()


async def close_broker_connections(name_part: str) -> int:
    """Close every broker connection whose client-given name contains `name_part`, as the
    broker does when it drops one. Returns how many."""

    def run(*args: str) -> str:
        done = subprocess.run(
            ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
        )
        return done.stdout

    listed = json.loads(
        await asyncio.to_thread(
            run, "list_connections", "name", "client_properties", "--formatter", "json"
        )
    )
    names = {
        c["name"]
        for c in listed
        if any(k == "connection_name" and name_part in str(v) for k, _, v in c["client_properties"])
    }
    pids = await asyncio.to_thread(run, "--no-table-headers", "list_connections", "pid", "name")
    closed = 0
    for pid, _, name in (line.partition("\t") for line in pids.splitlines()):
        if name in names:
            await asyncio.to_thread(run, "close_connection", pid, "test: connection cut")
            closed += 1
    return closed
