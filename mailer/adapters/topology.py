"""What mailer declares on RabbitMQ, and the names and headers it uses there.

Declared idempotently by `mailer migrate` and by every worker at start:

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
    exchange mailer.events (topic): events back to the portal, routing key
        <account>.<type> (docs/events.md); mailer binds no queue to it, a consumer binds its own.
    mailer.dead: on the way to the parked_jobs table (adapters/dead_letters.py): poison the
        work queues dead-letter, and jobs a worker parked while the database was away,
        with x-mailer-origin-queue and x-mailer-reason headers. A worker moves each into
        the table and then acknowledges it; nothing else takes from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, ExchangeType

from mailer.errors import ConfigError

EXCHANGE = "mailer"
RETRY_EXCHANGE = "mailer.retry"
EVENTS_EXCHANGE = "mailer.events"
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


def queue_arguments(queue: str) -> dict[str, Any]:
    """The arguments a work queue or mailer.dead is declared with."""
    return _dead_queue_arguments() if queue == DEAD_QUEUE else _work_queue_arguments(queue)


def _delay_queue_arguments(delay_ms: int) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-message-ttl": delay_ms,
        "x-dead-letter-exchange": EXCHANGE,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare(connection: AbstractConnection, delays_ms: Iterable[int]) -> None:
    """The exchanges, the work queues and a delay queue for each delay, bound; a queue
    declared before with other arguments is a ConfigError. (mailer.dead: `declare_dead_queue`.)"""
    async with connection.channel() as channel:
        try:
            main = await channel.declare_exchange(EXCHANGE, ExchangeType.DIRECT, durable=True)
            await channel.declare_exchange(EVENTS_EXCHANGE, ExchangeType.TOPIC, durable=True)
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


async def declare_dead_queue(channel: AbstractChannel) -> bool:
    """mailer.dead with its delivery limit, on a channel of its own: whether it has it. One
    an older mailer declared without the limit cannot be changed (RabbitMQ keeps a queue's
    arguments), and the broker closes the channel that asked: False, for the caller to use
    it as it is or, while no worker runs, to declare it anew."""
    try:
        await channel.declare_queue(DEAD_QUEUE, durable=True, arguments=_dead_queue_arguments())
    except aiormq.exceptions.ChannelPreconditionFailed:
        return False
    await channel.close()
    return True
