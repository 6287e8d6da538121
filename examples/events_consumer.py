"""A portal's consumer of mailer's events (docs/events.md), with aio-pika.

It binds a durable quorum queue of its own to the `mailer.events` topic exchange for
`*.message.*` (every account's message events; `acme.message.*` for one account,
`*.message.bounced` for one type), and prints one line per event, dropping a repeat by the
event's `id`: events are published at least once, so the same event may arrive twice.

A real consumer keeps the ids it has applied in its own database, written in the same
transaction as what the event changes there; this one keeps the last 100,000 in memory.

    python examples/events_consumer.py amqp://guest:guest@127.0.0.1:5672/ \
        --queue portal.events --binding '*.message.*'
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import OrderedDict

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

EXCHANGE = "mailer.events"
REMEMBERED = 100_000


class SeenIds:
    """The ids applied lately, oldest forgotten first."""

    def __init__(self, size: int = REMEMBERED) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def first_time(self, event_id: str) -> bool:
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


def describe(event: dict[str, object]) -> str:
    """One line for an event: its type, job, recipient and detail."""
    return (
        f"{event['occurred_at']} {event['type']} account={event['account']}"
        f" job={event['job_id']} recipient={event['recipient']}"
        f" detail={json.dumps(event['detail'], ensure_ascii=False, sort_keys=True)}"
    )


async def consume(url: str, queue_name: str, binding: str, stop_after: int | None) -> None:
    connection = await aio_pika.connect_robust(url)
    seen = SeenIds()
    new = 0
    done = asyncio.Event()
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=100)
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(
            queue_name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(exchange, routing_key=binding)

        async def take(message: AbstractIncomingMessage) -> None:
            nonlocal new
            async with message.process():  # acknowledged once handled
                event = json.loads(message.body)
                if not seen.first_time(event["id"]):
                    print(f"repeat {event['id']} dropped", flush=True)
                    return
                print(describe(event), flush=True)
                new += 1
                if stop_after is not None and new >= stop_after:
                    done.set()

        await queue.consume(take)
        print(f"consuming {queue_name} bound to {EXCHANGE} for {binding}", flush=True)
        await done.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the broker, e.g. amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--queue", default="portal.events", help="this consumer's own queue")
    parser.add_argument("--binding", default="*.message.*", help="what it binds for")
    parser.add_argument("--stop-after", type=int, help="end after this many new events")
    args = parser.parse_args()
    asyncio.run(consume(args.url, args.queue, args.binding, args.stop_after))


if __name__ == "__main__":
    main()
