"""`mailer subscribers show|unsubscribe ADDRESS`: one person as mailer knows them, by the
address typed, and their unsubscribe at an operator's hand.

The address is hashed with the ledger key, as `mailer suppressions` does, and is never
printed: the person is named by the reference the logs use (`#1a2b3c4d`). Shown: their status
on each list and since when, their suppression, and the newest messages of any kind sent to
them (receipts, confirmations, newsletters). No other address is ever shown. Unsubscribing
them is the one unsubscribe every other path makes (mailer/adapters/subscribers.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import TextIO

import asyncpg

from mailer.adapters.ledger_views import DeliveryRow, LedgerViews, ListStanding
from mailer.adapters.subscribers import Subscribers
from mailer.adapters.suppressions import Suppression, Suppressions
from mailer.commands.running import Subcommands, address_hash_key, on_database
from mailer.config import Settings
from mailer.core.addresses import InvalidAddress, address_ref, typed_address_key
from mailer.core.terminal import one_line
from mailer.core.times import WIDTH, when
from mailer.errors import ConfigError, MailerError

DELIVERIES = 10


def add_parser(actions: Subcommands) -> None:
    show = actions.add_parser(
        "show",
        help="one person's lists and status, suppression and latest messages, "
        "by the address typed (hashed, never printed)",
    )
    show.add_argument("address", metavar="ADDRESS", help="an e-mail address")
    show.add_argument(
        "--deliveries",
        type=int,
        default=DELIVERIES,
        metavar="N",
        help=f"how many of the latest messages to them to show (default {DELIVERIES})",
    )
    on_database(show, _show)
    leave = actions.add_parser(
        "unsubscribe",
        help="take one person off a list, or off every list, as their own unsubscribe does "
        "(their messages still waiting are suppressed), by the address typed",
    )
    leave.add_argument("address", metavar="ADDRESS", help="an e-mail address")
    leave.add_argument(
        "--list", dest="list_slug", metavar="SLUG", help="the list (default: every list)"
    )
    on_database(leave, _unsubscribe)


async def _show(args: argparse.Namespace, settings: Settings, pool: asyncpg.Pool) -> int:
    views, suppressions = LedgerViews(pool), Suppressions(pool)
    return await show(args, views, suppressions, address_hash_key(settings), sys.stdout)


async def _unsubscribe(args: argparse.Namespace, settings: Settings, pool: asyncpg.Pool) -> int:
    if args.list_slug is not None and args.list_slug not in settings.lists:
        raise ConfigError(f"no list {args.list_slug!r} in the configuration ([lists.<slug>])")
    subscribers = Subscribers(pool)
    lists = await subscribers.list_ids(settings.lists)
    return await unsubscribe(args, subscribers, lists, address_hash_key(settings), sys.stdout)


def _key(typed: str, hash_key: bytes) -> bytes:
    try:
        return typed_address_key(hash_key, typed)
    except InvalidAddress as exc:
        raise MailerError(str(exc)) from None


def _lists(standings: list[ListStanding]) -> list[str]:
    if not standings:
        return ["lists: on none"]
    lines = ["lists:"]
    for one in standings:
        lines.append(
            f"  {one_line(one.slug, 24):24}  {one.status:12}  since {when(one.since)}  "
            f"({one_line(one.source, 24)})"
        )
    return lines


def _suppression(one: Suppression | None, now: datetime) -> str:
    if one is None:
        return "suppression: none"
    if one.expires_at is not None and one.expires_at <= now:
        return f"suppression: none ({one.reason} expired {when(one.expires_at)})"
    until = f"until {when(one.expires_at)}" if one.expires_at else "for good"
    report = f"; made by bounce report {one.report_id}" if one.report_id else ""
    detail = f": {one_line(one.detail, 120)}" if one.detail else ""
    return f"suppression: {one.reason} since {when(one.created_at)}, {until}{report}{detail}"


def _deliveries(rows: list[DeliveryRow]) -> list[str]:
    if not rows:
        return ["latest messages: none"]
    lines = [
        "latest messages, newest first:",
        f"  {'UPDATED':{WIDTH}}  {'KIND':12}  {'JOB':36}  {'STATUS':10}  {'ATTEMPTS':>8}  DETAIL",
    ]
    for row in rows:
        lines.append(
            f"  {when(row.updated_at)}  {row.kind:12}  {row.job_id!s:36}  {row.status:10}  "
            f"{row.attempts:>8}  {one_line(row.detail or '-', 80)}"
        )
    return lines


async def show(
    args: argparse.Namespace,
    views: LedgerViews,
    suppressions: Suppressions,
    hash_key: bytes,
    out: TextIO,
) -> int:
    """Exit status 1 when mailer knows nothing of the address."""
    if not 1 <= args.deliveries <= 1000:
        raise MailerError("--deliveries: a number from 1 to 1000")
    key = _key(args.address, hash_key)
    now = await views.now()
    standings = await views.subscriptions_of(key)
    suppression = await suppressions.show(key)
    deliveries = await views.deliveries_to(key, limit=args.deliveries)
    lines = [
        f"{address_ref(key)} (the address typed; it is not stored or shown)",
        *_lists(standings),
        _suppression(suppression, now),
        *_deliveries(deliveries),
        f"measured at {when(now)}",
    ]
    print("\n".join(lines), file=out)
    return 0 if standings or suppression or deliveries else 1


async def unsubscribe(
    args: argparse.Namespace,
    subscribers: Subscribers,
    lists: Mapping[str, int],
    hash_key: bytes,
    out: TextIO,
) -> int:
    """An operator's unsubscribe, one line per list the person was on. Exit status 1 when
    they are on none (of the list named, or at all)."""
    key = _key(args.address, hash_key)
    list_id = None if args.list_slug is None else lists[args.list_slug]
    before = await subscribers.unsubscribe_address(key, "operator", list_id=list_id)
    ref = address_ref(key)
    if not before:
        where = f"the list {args.list_slug}" if args.list_slug else "any list"
        print(f"{ref}: not on {where}", file=out)
        return 1
    slugs = {one: slug for slug, one in lists.items()}
    for one, status in sorted(before.items(), key=lambda item: slugs.get(item[0], "")):
        slug = one_line(slugs.get(one, f"list {one}"), 24)
        done = "unsubscribed already" if status == "unsubscribed" else f"{status} → unsubscribed"
        print(f"{ref}: {slug}: {done}", file=out)
    return 0
