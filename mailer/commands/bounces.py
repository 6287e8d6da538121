"""`mailer bounces list|show|serve`: the bounce reports that came back, and the receiver alone.

No address is shown: a report names its delivery (by id) and the delivery's recipient only
by the keyed hash's reference (`#1a2b3c4d`, as in the logs). `show --raw` prints the stored
report as it arrived, for an operator who must read it (kept for the retention only).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

import asyncpg

from mailer.adapters.bounces import BounceReports, StoredReport
from mailer.commands.running import Subcommands, on_database, runs
from mailer.commands.serving import serve_bounces
from mailer.config import Settings
from mailer.core.bounces.kinds import Kind
from mailer.core.times import when


def add_parser(commands: Subcommands) -> None:
    bounces = commands.add_parser("bounces", help="bounce and complaint reports")
    actions = bounces.add_subparsers(dest="bounces_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the latest reports, and counts by kind and domain")
    listing.add_argument(
        "--kind",
        choices=[str(kind) for kind in Kind],
    )
    listing.add_argument("--delivery", type=int, help="reports about this delivery id")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--days", type=int, default=30, help="counts over this many days")
    on_database(listing, _reports)
    show = actions.add_parser("show", help="one report: its classification and outcome")
    show.add_argument("report_id", type=int, metavar="REPORT_ID")
    show.add_argument("--raw", action="store_true", help="print the stored report too")
    on_database(show, _reports)
    serve = actions.add_parser("serve", help="run the bounce receiver ([bounces] listen) alone")
    runs(serve, serve_bounces)


async def _reports(args: argparse.Namespace, settings: Settings, pool: asyncpg.Pool) -> int:
    reports = BounceReports(pool)
    if args.bounces_command == "show":
        return await show_report(args, reports, sys.stdout)
    return await list_reports(args, reports, sys.stdout)


def _line(report: StoredReport) -> str:
    kind = report.kind or "unclassified"
    delivery = "-" if report.delivery_id is None else report.delivery_id
    return (
        f"{report.id:>8}  {when(report.received_at)}  {kind:12}  delivery {delivery!s:<10}  "
        f"{report.domain or '-':24}  {report.outcome or '-'}"
    )


async def list_reports(args: argparse.Namespace, reports: BounceReports, out: TextIO) -> int:
    found = await reports.latest(kind=args.kind, delivery_id=args.delivery, limit=args.limit)
    for report in found:
        print(_line(report), file=out)
    print(f"{len(found)} report(s) shown", file=sys.stderr)
    print(f"\nby kind and destination domain, last {args.days} days:", file=out)
    for kind, domain, count in await reports.counts(days=args.days):
        print(f"  {kind:12}  {domain:32}  {count}", file=out)
    print("\nlatest issues: deliveries, bounced, complaints (rate):", file=out)
    for issue_id, total, bounced, complaints in await reports.issue_rates():
        rate = f"{100 * complaints / total:.2f}%" if total else "-"
        print(f"  {issue_id}  {total:>8}  {bounced:>6}  {complaints:>5} ({rate})", file=out)
    return 0


async def show_report(args: argparse.Namespace, reports: BounceReports, out: TextIO) -> int:
    report = await reports.show(args.report_id)
    if report is None:
        print(f"no bounce report {args.report_id}", file=sys.stderr)
        return 1
    fields = {
        "report": report.id,
        "received": when(report.received_at),
        "from peer": report.peer,
        "delivery": report.delivery_id or "none (mail to postmaster@ naming no delivery)",
        "size": f"{report.size} bytes",
        "kind": report.kind or "unclassified",
        "reason": report.reason or "-",
        "evidence": report.evidence or "-",
        "status": report.status or "-",
        "diagnostic": report.diagnostic or "-",
        "domain": report.domain or "-",
        "outcome": report.outcome or "-",
        "classified": when(report.classified_at),
        "raw": "kept" if report.raw is not None else "deleted (past the retention)",
    }
    for name, value in fields.items():
        print(f"{name + ':':12} {value}", file=out)
    if args.raw and report.raw is not None:
        print("", file=out)
        print(report.raw.decode("utf-8", "replace"), file=out)
    return 0
