"""What the operator finds in mailer.dead."""

from __future__ import annotations

from aio_pika.abc import AbstractIncomingMessage

from mailer.adapters.broker import DEAD_QUEUE, Broker
from tests.support.waiting import eventually


async def parked(portal: Broker, count: int) -> list[AbstractIncomingMessage]:
    """Wait until `count` messages are parked, and take them."""
    channel = await portal.open_channel()
    queue = await channel.get_queue(DEAD_QUEUE, ensure=False)
    found: list[AbstractIncomingMessage] = []

    async def probe() -> bool:
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            found.append(message)
        return len(found) >= count

    await eventually(probe)
    return found


def reasons(messages: list[AbstractIncomingMessage]) -> list[str]:
    return sorted(str(message.headers["x-mailer-reason"]) for message in messages)
