"""`mailer workers`: the worker processes, alive first, as they report themselves, with the
deliveries each holds unacknowledged per queue (as it last counted them)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

import asyncpg

from mailer.adapters.workers import WorkerProcess, Workers
from mailer.commands.running import Subcommands, on_database
from mailer.config import Settings
from mailer.core.terminal import one_line
from mailer.core.times import WIDTH, duration, when


def add_parser(commands: Subcommands) -> None:
    listing = commands.add_parser(
        "workers", help="worker processes: alive, gone (silent for a lease) or stopped"
    )
    on_database(listing, list_workers)


async def list_workers(args: argparse.Namespace, settings: Settings, pool: asyncpg.Pool) -> int:
    for line in worker_rows(await Workers(pool).list()):
        print(line)
    return 0


def held(unacked: Mapping[str, int]) -> str:
    """`mailer.receipts 3, mailer.newsletters 1`, or `-` when it holds none."""
    shown = [f"{one_line(queue, 40)} {n}" for queue, n in sorted(unacked.items()) if n]
    return ", ".join(shown) or "-"


def worker_rows(processes: list[WorkerProcess]) -> list[str]:
    lines = [
        f"{'PRESENCE':8}  {'HOST':24}  {'PID':>7}  {'VERSION':10}  {'RUNS':10}  "
        f"{'STARTED':{WIDTH}}  {'LAST HEARTBEAT':{WIDTH}}  {'SILENT FOR':12}  UNACKED"
    ]
    for p in processes:
        lines.append(
            f"{p.presence:8}  {one_line(p.host, 24):24}  {p.pid:>7}  {one_line(p.version, 10):10}"
            f"  {'+'.join(p.runs):10}  {when(p.started_at):{WIDTH}}  {when(p.heartbeat_at):{WIDTH}}"
            f"  {duration(p.silent_for):12}  {held(p.unacked) if p.presence == 'alive' else '-'}"
        )
    if processes:
        lines.append(f"measured at {when(processes[0].measured_at)}")
    return lines
