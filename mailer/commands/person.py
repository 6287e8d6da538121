"""`mailer subscribers show ADDRESS`: one person as mailer knows them, by the address typed.

The address is hashed with the ledger key, as `mailer suppressions` does, and is never
printed: the person is named by the reference the logs use (`#1a2b3c4d`). Shown: their status
on each list and since when, their suppression, and the newest messages of any kind sent to
them (receipts, confirmations, newsletters). No other address is ever shown.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import TextIO

import asyncpg

from mailer.adapters.bounces import Suppression, Suppressions
from mailer.adapters.ledger_views import DeliveryRow, LedgerViews, ListStanding
from mailer.commands.running import Subcommands, address_hash_key, on_database
from mailer.config import Settings
from mailer.core.addresses import InvalidAddress, address_ref, typed_address_key
from mailer.core.terminal import one_line
from mailer.core.times import WIDTH, when
from mailer.errors import MailerError

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


async def _show(args: argparse.Namespace, settings: Settings, pool: asyncpg.Pool) -> int:
    views, suppressions = LedgerViews(pool), Suppressions(pool)
    return await show(args, views, suppressions, address_hash_key(settings), sys.stdout)


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
