"""`mailer dlq list|show|requeue|purge`: parked jobs, as the parked_jobs table holds them.

Looking (list, show) reads the table and changes nothing. Requeue sends a job back to the
queue it came from and then deletes its row; purge deletes the row. Reasons and bodies are
shown with addresses masked, and every value from a job on one line (core/terminal.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

import asyncpg

from mailer.adapters.broker import Broker
from mailer.adapters.dead_letters import DeadLetters
from mailer.adapters.parked import ParkedJob, ParkedJobs, ParkedRow
from mailer.commands.running import Subcommands, on_database, runs_async, with_database
from mailer.config import Settings
from mailer.core.addresses import mask_addresses
from mailer.core.terminal import one_line
from mailer.core.times import WIDTH, when
from mailer.web.console.masking import masked_headers, pretty_body

ACTIONS = {"requeue": "requeued", "purge": "purged"}


def add_parser(commands: Subcommands) -> None:
    dlq = commands.add_parser("dlq", help="parked jobs: look, requeue, purge")
    actions = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="parked jobs, oldest first, and why they were parked")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = actions.add_parser("show", help="one parked job: its facts, headers and body (masked)")
    show.add_argument("ref", metavar="REF", help="a ref or job id shown by `mailer dlq list`")
    on_database(listing, _look)
    on_database(show, _look)
    for name, text in (
        ("requeue", "send parked jobs back to the queue they came from"),
        ("purge", "delete parked jobs for good"),
    ):
        action = actions.add_parser(name, help=text)
        which = action.add_mutually_exclusive_group(required=True)
        which.add_argument(
            "refs",
            nargs="*",
            default=[],
            metavar="REF",
            help="a ref or job id shown by `mailer dlq list`",
        )
        which.add_argument("--all", action="store_true")
        runs_async(action, _settle)


async def _look(args: argparse.Namespace, settings: Settings, pool: asyncpg.Pool) -> int:
    return await look(args, ParkedJobs(pool), sys.stdout)


async def _settle(args: argparse.Namespace, settings: Settings) -> int:
    """Parked jobs are read from the database; the broker is connected to only to requeue."""
    connected: list[Broker] = []

    async def broker() -> Broker:
        if not connected:
            found = Broker.from_settings(settings.broker, name="mailer dlq")
            await found.connect()
            connected.append(found)
        return connected[0]

    async def run(pool: asyncpg.Pool) -> int:
        try:
            return await settle(args, DeadLetters(ParkedJobs(pool), broker), sys.stdout)
        finally:
            for found in connected:
                await found.close()

    return await with_database(settings, run)


def _reason(reason: str) -> str:
    return one_line(mask_addresses(reason))


def list_rows(rows: list[ParkedRow], *, as_json: bool) -> list[str]:
    if as_json:
        return [
            json.dumps(
                {
                    "ref": row.ref,
                    "job_id": row.job_id,
                    "origin": row.origin,
                    "parked_at": row.parked_at.isoformat(timespec="seconds"),
                    "deliveries": row.deliveries,
                    "size": row.size,
                    "reason": mask_addresses(row.reason),
                },
                ensure_ascii=False,
            )
            for row in rows
        ]
    lines = [
        f"{'REF':12}  {'JOB ID':36}  {'ORIGIN':22}  {'PARKED':{WIDTH}}  {'DELIVERIES':>10}  REASON"
    ]
    for row in rows:
        deliveries = "-" if row.deliveries is None else str(row.deliveries)
        lines.append(
            f"{row.ref:12}  {one_line(row.job_id or '-', 36):36}  "
            f"{one_line(row.origin or '-', 22):22}  {when(row.parked_at):{WIDTH}}  "
            f"{deliveries:>10}  {_reason(row.reason)}"
        )
    return lines


def show_lines(job: ParkedJob) -> list[str]:
    facts: dict[str, Any] = {
        "ref": job.ref,
        "job id": one_line(job.job_id or "-"),
        "origin": one_line(job.origin or "unknown"),
        "parked": when(job.parked_at),
        "deliveries": "-" if job.deliveries is None else job.deliveries,
        "reason": _reason(job.reason),
        "size": f"{len(job.body)} bytes",
    }
    lines = [f"{name + ':':12} {value}" for name, value in facts.items()]
    properties = {k: v for k, v in job.properties.items() if k != "headers"}
    for title, values in (("properties", properties), ("headers", job.headers)):
        lines.append(f"{title}:")
        lines += [f"  {one_line(k)}: {one_line(v)}" for k, v in masked_headers(values)]
    lines.append("body (addresses masked):")
    lines += [one_line(line) for line in pretty_body(job.body).split("\n")]
    return lines


async def look(args: argparse.Namespace, parked: ParkedJobs, out: TextIO) -> int:
    if args.dlq_command == "show":
        job = await parked.one(args.ref)
        if job is None:
            print(
                f"mailer: dlq show: no parked job {args.ref!r} (see `mailer dlq list`)",
                file=sys.stderr,
            )
            return 1
        for line in show_lines(job):
            print(line, file=out)
        return 0
    rows = await parked.first(args.limit)
    for line in list_rows(rows, as_json=args.json):
        print(line, file=out)
    if not args.json:
        print(f"{len(rows)} parked job(s) shown", file=sys.stderr)
    return 0


async def settle(args: argparse.Namespace, dead: DeadLetters, out: TextIO) -> int:
    action: str = args.dlq_command
    verb = ACTIONS[action]
    refs = None if args.all else set(args.refs)
    done = left = 0
    seen: set[str] = set()
    async for row, settled in dead.settle(action, refs):
        seen |= {row.ref, row.job_id or ""}
        job_id = one_line(row.job_id or "-")
        origin = one_line(row.origin or "an unknown queue")
        if not settled:
            left += 1
            print(
                f"mailer: dlq {action}: {row.ref} left parked: it names no queue it came from"
                " (purge it, or publish the job again)",
                file=sys.stderr,
            )
        elif action == "requeue":
            done += 1
            print(f"requeued {row.ref} {job_id} → {origin}", file=out)
        else:
            done += 1
            print(f"purged {row.ref} {job_id} (parked from {origin})", file=out)
    print(f"{done} job(s) {verb}", file=sys.stderr)
    unknown = [ref for ref in args.refs if ref not in seen]
    for ref in unknown:
        print(
            f"mailer: dlq {action}: no parked job {one_line(ref)!r} (see `mailer dlq list`)",
            file=sys.stderr,
        )
    return 1 if unknown or left else 0
