"""RabbitMQ through aio-pika: one connection to any node of the cluster, publishing with the
broker's confirm (a job, a retry round a delay queue, a job parked in mailer.dead), and the
consumers of this process.

What is declared there and the names used: adapters/topology.py. Moving between nodes:
adapters/node_rotation.py. A consumer and the message a handler gets: adapters/consuming.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, DeliveryMode
from aio_pika.exceptions import AMQPException, DeliveryError, PublishError
from yarl import URL

from mailer.adapters import topology
from mailer.adapters.consuming import Consumer, Handler, QueueMessage
from mailer.adapters.node_rotation import NodeRotatingConnection, redact
from mailer.adapters.topology import (
    ATTEMPT_HEADER,
    DEAD_QUEUE,
    DELAY_HEADER,
    DELIVERIES_HEADER,
    DELIVERY_COUNT_HEADER,
    EVENTS_EXCHANGE,
    EXCHANGE,
    FAILURES_HEADER,
    ORIGIN_HEADER,
    PARKED_AT_HEADER,
    QUEUE_ROUTES,
    REASON_HEADER,
    RETRY_EXCHANGE,
    queue_arguments,
)
from mailer.config import BrokerSettings
from mailer.core.events import StoredEvent, encode, routing_key
from mailer.errors import ConfigError, TemporaryFailure

log = logging.getLogger(__name__)


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
        """Declare the whole topology (adapters/topology.py); a queue declared before with
        other arguments is an error, but for a mailer.dead an older mailer declared, which is
        used as it is (on RabbitMQ 3.10 that means no limit): `mailer migrate` declares it
        anew while no worker runs."""
        assert self._connection is not None
        self.dead_queue_outdated = not await topology.declare_dead_queue(
            await self._connection.channel()
        )
        if self.dead_queue_outdated:
            log.warning(
                "%s has no delivery limit (an older mailer declared it): used as it is;"
                " `mailer migrate` with no worker running declares it anew",
                DEAD_QUEUE,
            )
        await topology.declare(self._connection, delays_ms)

    async def publish(
        self,
        body: bytes,
        *,
        routing_key: str,
        exchange: str = EXCHANGE,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        content_type: str | None = "application/json",
        mandatory: bool = True,
    ) -> None:
        """Publish persistently and wait for the broker's confirm; TemporaryFailure otherwise.
        `mandatory`: a message no queue takes is a failure (jobs); an event is not (its
        exchange has the queues consumers bound, none when nobody listens)."""
        message = aio_pika.Message(
            body,
            headers=dict(headers or {}),
            content_type=content_type,
            message_id=message_id,
            delivery_mode=DeliveryMode.PERSISTENT,
        )
        await self.publish_message(
            message, routing_key=routing_key, exchange=exchange, mandatory=mandatory
        )

    async def publish_message(
        self,
        message: aio_pika.Message,
        *,
        routing_key: str,
        exchange: str = EXCHANGE,
        mandatory: bool = True,
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
                message,
                routing_key=routing_key,
                mandatory=mandatory,
                timeout=self._publish_timeout,
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

    async def publish_event(self, event: StoredEvent) -> None:
        """An event on mailer.events under `<account>.<type>`, its id as the message id, and
        the broker's confirm waited for; TemporaryFailure otherwise. Not mandatory: with no
        queue bound for it, the broker drops it, and it is published all the same."""
        await self.publish(
            encode(event.body),
            routing_key=routing_key(event.account, event.type),
            exchange=EVENTS_EXCHANGE,
            message_id=str(event.id),
            headers={"x-mailer-event-type": event.type},
            mandatory=False,
        )

    async def republish(
        self,
        message: QueueMessage,
        *,
        routing_key: str,
        exchange: str = "",
        extra_headers: Mapping[str, Any] | None = None,
        drop_headers: Iterable[str] = (),
    ) -> None:
        """Publish a received message again, body byte-identical, properties kept."""
        dropped = set(drop_headers)
        headers = {k: v for k, v in message.headers.items() if k not in dropped}
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
        message: QueueMessage,
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
        message: QueueMessage,
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
                queue_name, durable=True, arguments=queue_arguments(queue_name)
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
