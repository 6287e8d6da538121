"""RabbitMQ through aio-pika: topology, publishing with confirms, consuming, parking.

Topology (declared idempotently by `mailer migrate` and by every worker at start):

    exchange mailer (direct) ── receipt ──► mailer.receipts       ┐ quorum queues with
                             ── newsletter ► mailer.newsletters   │ x-delivery-limit; a message
                             ── subscription ► mailer.subscriptions┘ redelivered past it is
                                                                    dead-lettered to mailer.dead
    exchange mailer.retry (headers) ─ x-mailer-delay=<ms> ─► mailer.delay.<ms>ms
        each a quorum queue whose message TTL is the delay and which dead-letters back to
        exchange mailer with the message's own routing key: a retry that survives restarts.
        A retry lands in exactly one delay queue: the bindings say `all-with-x`, because a
        headers exchange ignores `x-` keys under plain `all`, and a binding with only such a
        key would then match every message. (`mailer.delay`, the exchange older versions
        bound that way, is deleted by declare, which takes its bindings with it.)
    mailer.dead: on the way to the parked_jobs table (adapters/dead_letters.py): poison the
        work queues dead-letter, and jobs a worker parked while the database was away,
        with x-mailer-origin-queue and x-mailer-reason headers. A worker moves each into
        the table and then acknowledges it; nothing else takes from it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq
from aio_pika import RobustConnection
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustQueue,
    DeliveryMode,
    ExchangeType,
)
from aio_pika.exceptions import (
    AMQPException,
    ChannelInvalidStateError,
    DeliveryError,
    PublishError,
)
from yarl import URL

from mailer.config import BrokerSettings
from mailer.errors import ConfigError, TemporaryFailure

log = logging.getLogger(__name__)

EXCHANGE = "mailer"
RETRY_EXCHANGE = "mailer.retry"
LEGACY_DELAY_EXCHANGE = "mailer.delay"  # bound to match every retry in every delay queue
DEAD_QUEUE = "mailer.dead"
ROUTES = {
    "receipt": "mailer.receipts",
    "newsletter": "mailer.newsletters",
    "subscription": "mailer.subscriptions",
}
QUEUE_ROUTES = {queue: key for key, queue in ROUTES.items()}
# How many times a message may be handed out before it counts as poison and is parked.
DELIVERY_LIMIT = 20
# mailer.dead hands a message out only to the worker that moves it into the table, which
# holds it until it is recorded: it comes back only when that process stops meanwhile.
# RabbitMQ 4 would otherwise apply its default of 20, and past the limit a message is
# dropped (mailer.dead dead-letters nowhere).
DEAD_DELIVERY_LIMIT = 1000
DELAY_HEADER = "x-mailer-delay"
ORIGIN_HEADER = "x-mailer-origin-queue"
REASON_HEADER = "x-mailer-reason"
PARKED_AT_HEADER = "x-mailer-parked-at"
DELIVERIES_HEADER = "x-mailer-deliveries"  # how many times the origin queue handed it out
DELIVERY_COUNT_HEADER = "x-delivery-count"  # set by the quorum queue handing a message out
ATTEMPT_HEADER = "x-mailer-attempt"
FAILURES_HEADER = "x-mailer-unexpected-failures"

Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]


def redact(url: str) -> str:
    """A URL fit for a log line: the password replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def delay_queue_name(delay_ms: int) -> str:
    return f"mailer.delay.{delay_ms}ms"


def delay_binding(delay_ms: int) -> dict[str, Any]:
    """What routes a retry of `delay_ms` to its delay queue, and nothing else there."""
    return {"x-match": "all-with-x", DELAY_HEADER: str(delay_ms)}


def _work_queue_arguments(queue: str) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": DEAD_QUEUE,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    if queue == ROUTES["subscription"]:
        # Changes for one address apply in the order published: one consumer at a time.
        arguments["x-single-active-consumer"] = True
    return arguments


def _dead_queue_arguments() -> dict[str, Any]:
    return {"x-queue-type": "quorum", "x-delivery-limit": DEAD_DELIVERY_LIMIT}


def _queue_arguments(queue: str) -> dict[str, Any]:
    return _dead_queue_arguments() if queue == DEAD_QUEUE else _work_queue_arguments(queue)


def _delay_queue_arguments(delay_ms: int) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-message-ttl": delay_ms,
        "x-dead-letter-exchange": EXCHANGE,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


class NodeRotatingConnection(RobustConnection):
    """A robust connection to any node of a cluster: every attempt goes to the next URL.

    aio-pika's robust connection retries a single URL (aio-pika#141). Each failed attempt and
    each lost connection passes through `_on_connection_close`, so that is where the URL moves
    on. Within a round of the nodes the next one is tried at once; after a whole round has
    failed the pause doubles from `delay` up to `max_delay`, so a dead cluster is not spun on.
    Channels, queues and consumers declared through this connection come back with it.
    """

    NEXT_NODE_PAUSE = 0.1

    def __init__(
        self, urls: Sequence[str], *, start: int = 0, delay: float, max_delay: float, **kwargs: Any
    ) -> None:
        self._urls = [URL(url) for url in urls]
        self._index = start % len(self._urls)
        self._delay = delay
        self._max_delay = max_delay
        self._failures = 0
        super().__init__(self._urls[self._index], reconnect_interval=delay, **kwargs)

    async def _on_connected(self) -> None:
        again = self.connection_attempt > 0
        await super()._on_connected()
        self._failures = 0
        self.reconnect_interval = self._delay
        log.log(logging.INFO if again else logging.DEBUG, "broker: connected to %s", self)

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        if not (self._close_called or self.is_closed):
            self._move_on(closing)
        await super()._on_connection_close(closing)

    def _move_on(self, closing: asyncio.Future[Any]) -> None:
        was = str(self)
        self._failures += 1
        self._index = (self._index + 1) % len(self._urls)
        self.url = self._urls[self._index]
        if self._failures % len(self._urls):
            self.reconnect_interval = self.NEXT_NODE_PAUSE
        else:
            rounds = self._failures // len(self._urls)
            self.reconnect_interval = min(self._delay * 2 ** (rounds - 1), self._max_delay)
        reason = closing.exception() if closing.done() and not closing.cancelled() else None
        # Before the first connection Broker.connect reports; afterwards this is the news.
        log.log(
            logging.WARNING if self.connection_attempt else logging.DEBUG,
            "broker: connection to %s lost or refused (%s); next attempt to %s in %.1fs",
            was,
            _reason(reason),
            self,
            self.reconnect_interval,
        )


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "closed"
    text = str(exc) or type(exc).__name__
    return text[:200]


def _underlay_consumers(channel: AbstractChannel) -> Mapping[str, Any]:
    """The consumer tags the broker currently delivers to on this channel.

    aiormq drops a tag when the broker cancels it (basic.cancel) or the channel closes; aio-pika
    offers no synchronous view of that, hence the private attribute (aio-pika 10.2).
    """
    underlay = getattr(channel, "_channel", None)
    consumers = getattr(getattr(underlay, "channel", None), "consumers", None)
    return consumers if isinstance(consumers, Mapping) else {}


class Broker:
    """One robust connection to any node; a confirming channel for publishing, one per consumer.

    Every queue consumed from is declared through its robust channel with the topology's own
    arguments and binding, and held here: aio-pika restores only what its robust channel
    declared (aio-pika#536), including a consumer the broker cancelled (queue deleted).
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        publish_timeout: float = 10.0,
        name: str = "mailer",
        heartbeat: int = 30,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self._urls = [urls] if isinstance(urls, str) else list(urls)
        if not self._urls:
            raise ValueError("a broker needs at least one URL")
        self._publish_timeout = publish_timeout
        self._name = name
        self._heartbeat = heartbeat
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self._connect_timeout = connect_timeout
        self._connection: NodeRotatingConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._consumers: dict[str, Consumer] = {}
        # mailer.dead found as an older mailer declared it (no delivery limit): used as is.
        self.dead_queue_outdated = False

    @classmethod
    def from_settings(cls, settings: BrokerSettings, *, name: str) -> Broker:
        return cls(
            settings.urls(),
            publish_timeout=settings.publish_timeout,
            name=name,
            heartbeat=settings.heartbeat,
            reconnect_delay=settings.reconnect_delay,
            max_reconnect_delay=settings.max_reconnect_delay,
        )

    def _url(self, url: str) -> str:
        parsed = URL(url)
        if "heartbeat" not in parsed.query:
            parsed = parsed.update_query(heartbeat=self._heartbeat)
        return str(parsed)

    async def connect(self) -> None:
        """Connect to the first node that answers, trying each once; ConfigError if none does."""
        error: BaseException | None = None
        for start in range(len(self._urls)):
            connection = NodeRotatingConnection(
                [self._url(url) for url in self._urls],
                start=start,
                delay=self._reconnect_delay,
                max_delay=self._max_reconnect_delay,
                client_properties={"connection_name": self._name},
            )
            try:
                await connection.connect(timeout=self._connect_timeout)
                self._publisher = await connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
            except (TimeoutError, OSError, AMQPException) as exc:
                error = exc
                await connection.close()
                continue
            self._connection = connection
            return
        where = (
            redact(self._urls[0])
            if len(self._urls) == 1
            else "any of " + ", ".join(redact(url) for url in self._urls)
        )
        raise ConfigError(f"broker: cannot connect to {where}: {error}") from None

    @property
    def is_connected(self) -> bool:
        """The connection is open now (not lost and waiting to reconnect)."""
        connection = self._connection
        return (
            connection is not None
            and not connection.is_closed
            and connection.connected.is_set()
            and connection.transport is not None
            and not connection.transport.connection.is_closed
        )

    def consumers(self) -> dict[str, bool]:
        """Per queue consumed by this process: whether the broker delivers to it right now."""
        connected = self.is_connected
        return {queue: connected and consumer.live for queue, consumer in self._consumers.items()}

    def unacked(self) -> dict[str, int]:
        """Per queue consumed by this process: deliveries it holds unacknowledged now."""
        return {queue: consumer.unacked for queue, consumer in self._consumers.items()}

    @property
    def ready(self) -> bool:
        """Connected, and every consumer started is live."""
        return self.is_connected and all(self.consumers().values())

    @property
    def node(self) -> str | None:
        """Host and port of the node connected to now, if any."""
        if not self.is_connected or self._connection is None:
            return None
        return f"{self._connection.url.host}:{self._connection.url.port}"

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
        self._consumers.clear()

    def _channel(self) -> AbstractChannel:
        if self._publisher is None:
            raise RuntimeError("broker is not connected")
        return self._publisher

    async def declare(self, delays_ms: Iterable[int]) -> None:
        """Declare the whole topology; a queue declared before with other arguments is an
        error, but for a mailer.dead an older mailer declared (see `_declare_dead_queue`)."""
        assert self._connection is not None
        await self._declare_dead_queue()
        async with self._connection.channel() as channel:
            try:
                main = await channel.declare_exchange(EXCHANGE, ExchangeType.DIRECT, durable=True)
                await channel.exchange_delete(LEGACY_DELAY_EXCHANGE)
                delay = await channel.declare_exchange(
                    RETRY_EXCHANGE, ExchangeType.HEADERS, durable=True
                )
                for routing_key, name in ROUTES.items():
                    queue = await channel.declare_queue(
                        name, durable=True, arguments=_work_queue_arguments(name)
                    )
                    await queue.bind(main, routing_key=routing_key)
                for delay_ms in sorted(set(delays_ms)):
                    queue = await channel.declare_queue(
                        delay_queue_name(delay_ms),
                        durable=True,
                        arguments=_delay_queue_arguments(delay_ms),
                    )
                    await queue.bind(delay, arguments=delay_binding(delay_ms))
            except aiormq.exceptions.ChannelPreconditionFailed as exc:
                raise ConfigError(
                    f"broker: existing topology differs from what mailer declares ({exc}); "
                    "delete the queue named there or restore its arguments"
                ) from None

    async def _declare_dead_queue(self) -> None:
        """mailer.dead with its delivery limit; one an older mailer declared without it is
        used as it is (RabbitMQ cannot change a queue's arguments): on RabbitMQ 3.10 that
        means no limit. `mailer migrate` declares it anew while no worker runs."""
        assert self._connection is not None
        channel = await self._connection.channel()
        try:
            await channel.declare_queue(DEAD_QUEUE, durable=True, arguments=_dead_queue_arguments())
        except aiormq.exceptions.ChannelPreconditionFailed:  # the broker closed the channel
            self.dead_queue_outdated = True
            log.warning(
                "%s has no delivery limit (an older mailer declared it): used as it is;"
                " `mailer migrate` with no worker running declares it anew",
                DEAD_QUEUE,
            )
            return
        self.dead_queue_outdated = False
        await channel.close()

    async def publish(
        self,
        body: bytes,
        *,
        routing_key: str,
        exchange: str = EXCHANGE,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        content_type: str | None = "application/json",
    ) -> None:
        """Publish persistently and wait for the broker's confirm; TemporaryFailure otherwise."""
        message = aio_pika.Message(
            body,
            headers=dict(headers or {}),
            content_type=content_type,
            message_id=message_id,
            delivery_mode=DeliveryMode.PERSISTENT,
        )
        await self.publish_message(message, routing_key=routing_key, exchange=exchange)

    async def publish_message(
        self, message: aio_pika.Message, *, routing_key: str, exchange: str = EXCHANGE
    ) -> None:
        """Publish a message made by the caller and wait for the confirm, as `publish`."""
        channel = self._channel()
        try:
            target = (
                channel.default_exchange
                if exchange == ""
                else await channel.get_exchange(exchange, ensure=False)
            )
            await target.publish(
                message, routing_key=routing_key, mandatory=True, timeout=self._publish_timeout
            )
        except DeliveryError as exc:
            raise TemporaryFailure(
                f"broker did not accept the message for {exchange or 'default'}/{routing_key}: "
                f"{_describe_delivery_error(exc)}"
            ) from None
        except TimeoutError:
            raise TemporaryFailure(
                f"broker did not confirm the message for {exchange or 'default'}/{routing_key} "
                f"within {self._publish_timeout:g}s (is a majority of its nodes up?)"
            ) from None
        except (PublishError, AMQPException, OSError) as exc:
            raise TemporaryFailure(f"publish to {exchange}/{routing_key} failed: {exc!r}") from None

    async def republish(
        self,
        message: AbstractIncomingMessage,
        *,
        routing_key: str,
        exchange: str = "",
        extra_headers: Mapping[str, Any] | None = None,
        drop_headers: Iterable[str] = (),
    ) -> None:
        """Publish a received message again, body byte-identical, properties kept."""
        headers = {k: v for k, v in (message.headers or {}).items() if k not in set(drop_headers)}
        headers.update(extra_headers or {})
        await self.publish(
            message.body,
            routing_key=routing_key,
            exchange=exchange,
            headers=headers,
            message_id=message.message_id,
            content_type=message.content_type,
        )

    async def park(
        self,
        message: AbstractIncomingMessage,
        *,
        origin: str,
        reason: str,
        deliveries: int | None = None,
    ) -> None:
        """Into mailer.dead, saying where from and why: when the parked_jobs table cannot
        take it now, from there it is moved into the table once it can."""
        extra: dict[str, Any] = {
            ORIGIN_HEADER: origin,
            REASON_HEADER: reason[:1000],
            PARKED_AT_HEADER: datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if deliveries is not None:
            extra[DELIVERIES_HEADER] = deliveries
        await self.republish(
            message,
            routing_key=DEAD_QUEUE,
            extra_headers=extra,
            drop_headers=(DELIVERY_COUNT_HEADER,),
        )

    async def retry_later(
        self,
        message: AbstractIncomingMessage,
        *,
        queue: str,
        delay_ms: int,
        attempt: int,
        failures: int = 0,
    ) -> None:
        headers: dict[str, Any] = {DELAY_HEADER: str(delay_ms), ATTEMPT_HEADER: attempt}
        if failures:
            headers[FAILURES_HEADER] = failures
        await self.republish(
            message,
            routing_key=QUEUE_ROUTES[queue],
            exchange=RETRY_EXCHANGE,
            extra_headers=headers,
            drop_headers=("x-death", FAILURES_HEADER),
        )

    async def consume(self, queue_name: str, handler: Handler, *, prefetch: int) -> Consumer:
        """Consume a work queue, or mailer.dead, through a robust channel, so the consumer
        outlives faults."""
        assert self._connection is not None
        channel = self._connection.channel()
        await channel.initialize(timeout=self._connect_timeout)
        await channel.set_qos(prefetch_count=prefetch)
        # Declared (not merely looked up) with the topology's arguments and bound again: a
        # robust channel re-runs both on reconnect, and after a basic.cancel for a deleted queue.
        if queue_name == DEAD_QUEUE and self.dead_queue_outdated:
            queue = await channel.declare_queue(queue_name, passive=True)
        else:
            queue = await channel.declare_queue(
                queue_name, durable=True, arguments=_queue_arguments(queue_name)
            )
        if queue_name in QUEUE_ROUTES:
            await queue.bind(EXCHANGE, routing_key=QUEUE_ROUTES[queue_name])
        consumer = Consumer(channel, queue, handler)
        await consumer.start()
        self._consumers[queue_name] = consumer
        return consumer

    async def open_channel(self) -> AbstractChannel:
        assert self._connection is not None
        return await self._connection.channel()


def _describe_delivery_error(exc: DeliveryError) -> str:
    frame = exc.frame
    if isinstance(frame, aiormq.spec.Basic.Return):
        return f"unroutable ({frame.reply_code} {frame.reply_text})"
    if isinstance(frame, aiormq.spec.Basic.Nack):
        return "refused by the broker (nack)"
    return repr(frame)


class Consumer:
    """Consumes one queue; tracks the handlers in flight so a shutdown can wait for them."""

    def __init__(
        self, channel: AbstractRobustChannel, queue: AbstractRobustQueue, handler: Handler
    ) -> None:
        self._channel = channel
        self._queue = queue
        self._handler = handler
        self._tag: str | None = None
        self._inflight: dict[asyncio.Task[Any], AbstractIncomingMessage] = {}

    async def start(self) -> None:
        self._tag = await self._queue.consume(self._on_message)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
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
        """Deliveries in hand and not yet acked, nacked or rejected, on a channel still open:
        what the broker counts as unacknowledged for this consumer (those of a channel that
        closed are back in the queue, whatever the handler still does with them)."""
        return sum(1 for message in self._inflight.values() if _unsettled(message))

    @property
    def live(self) -> bool:
        """The broker delivers to this consumer now: its channel is open and its tag known."""
        return (
            self._tag is not None
            and not self._channel.is_closed
            and self._tag in _underlay_consumers(self._channel)
        )

    async def cancel(self) -> None:
        """Take no more messages."""
        if self._tag is not None and not self._channel.is_closed:
            try:
                await self._queue.cancel(self._tag)
            except (TimeoutError, AMQPException, OSError):
                log.warning("could not cancel the consumer of %s cleanly", self._queue.name)
        self._tag = None

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


def _unsettled(message: AbstractIncomingMessage) -> bool:
    if message.processed:
        return False
    try:
        return not message.channel.is_closed
    except ChannelInvalidStateError:  # aio-pika's way of saying the channel closed
        return False


class DeadQueue:
    """mailer.dead for `mailer migrate`: the parked jobs it holds are taken to be moved into
    the table (with basic.get, each acknowledged by the caller once recorded, so none is
    handed back), and a mailer.dead an older mailer declared is declared anew."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    async def current(self) -> bool:
        """Whether mailer.dead has the arguments this mailer declares (declared if absent)."""
        channel = await self._broker.open_channel()
        try:
            await channel.declare_queue(DEAD_QUEUE, durable=True, arguments=_dead_queue_arguments())
        except aiormq.exceptions.ChannelPreconditionFailed:
            return False  # the broker closed the channel
        await channel.close()
        return True

    async def taken(self) -> AsyncIterator[AbstractIncomingMessage]:
        """Every message in mailer.dead now, one at a time, for the caller to acknowledge."""
        async with await self._broker.open_channel() as channel:
            queue = await channel.get_queue(DEAD_QUEUE, ensure=False)
            while (message := await queue.get(no_ack=False, fail=False, timeout=10)) is not None:
                yield message

    async def replace(self) -> int:
        """Delete mailer.dead and declare it with today's arguments; how many messages went
        with it. Quorum queues cannot be deleted only if empty: the caller empties it first
        and makes sure nothing publishes to it meanwhile."""
        async with await self._broker.open_channel() as channel:
            deleted = await channel.queue_delete(DEAD_QUEUE)
            await channel.declare_queue(DEAD_QUEUE, durable=True, arguments=_dead_queue_arguments())
        self._broker.dead_queue_outdated = False
        return int(getattr(deleted, "message_count", 0) or 0)
