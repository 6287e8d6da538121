"""`mailer events replay`: publish kept events again on mailer.events, as they were first
published (the same id, body and routing key), for a consumer that lost some or starts
afresh. Its consumers drop what they had already by the event's id.

Events are kept for [events] retention_days after they were published; a replay takes
those of one account that happened in [--since, --until), of the types named (all without
--type), in the order they were first published, the events of one message one after
another."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import asyncpg

from mailer.adapters import outbox
from mailer.adapters.broker import Broker
from mailer.commands.running import Subcommands, runs_async, with_broker, with_database
from mailer.config import Settings
from mailer.core.events import DEFAULT_ACCOUNT, EVENT_TYPES, EventType, event_type
from mailer.core.times import typed_moment, when
from mailer.errors import MailerError, TemporaryFailure
from mailer.parts.events import publish_in_order

PAGE = 500


def add_parser(commands: Subcommands) -> None:
    events = commands.add_parser("events", help="events back to the portal (docs/events.md)")
    actions = events.add_subparsers(dest="action", required=True, metavar="ACTION")
    replay = actions.add_parser(
        "replay",
        help="publish kept events of an account again on mailer.events, with their ids",
    )
    replay.add_argument(
        "--account", default=DEFAULT_ACCOUNT, help=f"whose events (default {DEFAULT_ACCOUNT})"
    )
    replay.add_argument(
        "--since",
        required=True,
        metavar="TIME",
        help="from this time on: 2026-12-07, 2026-12-07T10:15 (UTC unless an offset"
        " follows), or a time ago: 2h, 7d",
    )
    replay.add_argument("--until", metavar="TIME", help="up to this time (default: now)")
    replay.add_argument(
        "--type",
        dest="types",
        action="append",
        default=[],
        metavar="TYPE",
        help=f"only this type (repeatable): {', '.join(EVENT_TYPES)}",
    )
    runs_async(replay, _replay)


def _moment(text: str, option: str, now: datetime) -> datetime:
    try:
        return typed_moment(text, now)
    except ValueError as exc:
        raise MailerError(f"{option}: {exc}") from None


async def _replay(args: argparse.Namespace, settings: Settings) -> int:
    now = datetime.now(UTC)
    since = _moment(args.since, "--since", now)
    until = _moment(args.until, "--until", now) if args.until else None
    try:
        types: list[EventType] = [event_type(t) for t in args.types]
    except ValueError as exc:
        raise MailerError(f"--type: {exc}") from None

    async def on_broker(broker: Broker) -> int:
        async def on_pool(pool: asyncpg.Pool) -> int:
            return await replay(
                pool, broker, account=args.account, since=since, until=until, types=types
            )

        return await with_database(settings, on_pool)

    count = await with_broker(settings, on_broker, name="events replay")
    print(
        f"replayed {count} event(s) of {args.account} from {when(since)}"
        f" to {when(until) if until else 'now'}"
    )
    return 0


async def replay(
    pool: asyncpg.Pool,
    broker: Broker,
    *,
    account: str,
    since: datetime,
    until: datetime | None,
    types: list[EventType],
) -> int:
    """Publish the kept events asked for; how many. MailerError when the broker fails."""
    published = 0
    after = 0
    while True:
        page = await outbox.kept(
            pool, account=account, since=since, until=until, types=types, after=after, limit=PAGE
        )
        if not page:
            return published
        done, error = await publish_in_order(broker.publish_event, page)
        published += len(done)
        if error is not None:
            reason = error if isinstance(error, TemporaryFailure) else repr(error)
            raise MailerError(f"replay stopped after {published} event(s): {reason}")
        after = page[-1].position
