"""Consuming a queue: the message a handler is given, and the consumer that hands messages
out, knows which are in hand, and lets them be settled (or returns them) at stop.

A handler sees a `QueueMessage`, never aio-pika's: its body, id and headers, and the two ways
to settle it, whose broker errors are mailer's (`TemporaryFailure`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustQueue,
)
from aio_pika.exceptions import AMQPException, ChannelInvalidStateError

from mailer.errors import TemporaryFailure

log = logging.getLogger(__name__)


class QueueMessage:
    """One message a queue handed to this process."""

    __slots__ = ("_message", "body", "content_type", "message_id")

    def __init__(self, message: AbstractIncomingMessage) -> None:
        self._message = message
        self.body: bytes = message.body
        self.message_id: str | None = message.message_id
        self.content_type: str | None = message.content_type

    @property
    def headers(self) -> dict[str, Any]:
        """A copy of its headers."""
        return dict(self._message.headers or {})

    def properties(self, names: tuple[str, ...]) -> dict[str, Any]:
        """The AMQP properties named (aio-pika's names) that the message has; its expiration
        in milliseconds, as AMQP writes it."""
        found: dict[str, Any] = {}
        for name in names:
            value = getattr(self._message, name)
            if name == "expiration":  # seconds in aio-pika
                value = round(value * 1000) if isinstance(value, int | float) else None
            if value is not None:
                found[name] = value
        return found

    async def ack(self) -> None:
        """Settled: the queue forgets it. TemporaryFailure when the broker cannot be told."""
        try:
            await self._message.ack()
        except (AMQPException, OSError) as exc:
            raise TemporaryFailure(f"broker: could not acknowledge a message ({exc})") from None

    async def give_back(self) -> None:
        """Back to its queue, for this or another worker. When the channel is gone the
        broker returns it anyway, so a failure here is nothing to act on."""
        with contextlib.suppress(AMQPException, OSError):
            await self._message.nack(requeue=True)

    @property
    def unsettled(self) -> bool:
        """In hand, neither acked nor given back, on a channel still open: what the broker
        counts as unacknowledged (those of a closed channel are back in their queue)."""
        if self._message.processed:
            return False
        try:
            return not self._message.channel.is_closed
        except ChannelInvalidStateError:  # aio-pika's way of saying the channel closed
            return False


Handler = Callable[[QueueMessage], Awaitable[None]]


def _underlay_consumers(channel: AbstractChannel) -> Mapping[str, Any]:
    """The consumer tags the broker currently delivers to on this channel.

    aiormq drops a tag when the broker cancels it (basic.cancel) or the channel closes; aio-pika
    offers no synchronous view of that, hence the private attribute (aio-pika 10.2).
    """
    underlay = getattr(channel, "_channel", None)
    consumers = getattr(getattr(underlay, "channel", None), "consumers", None)
    return consumers if isinstance(consumers, Mapping) else {}


class Consumer:
    """Consumes one queue; tracks the handlers in flight so a shutdown can wait for them."""

    def __init__(
        self, channel: AbstractRobustChannel, queue: AbstractRobustQueue, handler: Handler
    ) -> None:
        self._channel = channel
        self._queue = queue
        self._handler = handler
        self._tag: str | None = None
        self._inflight: dict[asyncio.Task[Any], QueueMessage] = {}

    async def start(self) -> None:
        self._tag = await self._queue.consume(self._on_message)

    async def _on_message(self, incoming: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        message = QueueMessage(incoming)
        self._inflight[task] = message
        try:
            await self._handler(message)
        finally:
            self._inflight.pop(task, None)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def unacked(self) -> int:
        """Deliveries in hand and not yet settled, on a channel still open: what the broker
        counts as unacknowledged for this consumer (those of a channel that closed are back
        in the queue, whatever the handler still does with them)."""
        return sum(1 for message in self._inflight.values() if message.unsettled)

    @property
    def live(self) -> bool:
        """The broker delivers to this consumer now: its channel is open and its tag known."""
        return (
            self._tag is not None
            and not self._channel.is_closed
            and self._tag in _underlay_consumers(self._channel)
        )

    async def cancel(self) -> None:
        """Take no more messages. Not live from the moment it is asked, not only once the
        broker confirms: /readyz says so for every queue as soon as a stop begins."""
        tag, self._tag = self._tag, None
        if tag is not None and not self._channel.is_closed:
            try:
                await self._queue.cancel(tag)
            except (TimeoutError, AMQPException, OSError):
                log.warning("could not cancel the consumer of %s cleanly", self._queue.name)

    async def drain(self, drain_timeout: float) -> None:
        """Let the messages in hand be settled; past the timeout, return them to the queue."""
        pending = set(self._inflight)
        if pending:
            _done, late = await asyncio.wait(pending, timeout=drain_timeout)
            for task in late:
                task.cancel()
            if late:
                log.warning(
                    "%d message(s) of %s not finished in %.0fs: returned to the queue",
                    len(late),
                    self._queue.name,
                    drain_timeout,
                )
                await asyncio.wait(late, timeout=5)
        if not self._channel.is_closed:
            await self._channel.close()
