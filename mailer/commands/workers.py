"""`mailer workers`: the worker processes, alive first, as they report themselves."""

from __future__ import annotations

from datetime import UTC, datetime

from mailer.adapters.workers import WorkerProcess
from mailer.core.progress import duration
from mailer.core.terminal import one_line


def _at(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def worker_rows(processes: list[WorkerProcess]) -> list[str]:
    lines = [
        f"{'PRESENCE':8}  {'HOST':24}  {'PID':>7}  {'VERSION':10}  {'RUNS':10}  "
        f"{'STARTED':19}  {'LAST HEARTBEAT':19}  SILENT FOR"
    ]
    for p in processes:
        lines.append(
            f"{p.presence:8}  {one_line(p.host, 24):24}  {p.pid:>7}  {one_line(p.version, 10):10}"
            f"  {'+'.join(p.runs):10}  {_at(p.started_at):19}  {_at(p.heartbeat_at):19}"
            f"  {duration(p.silent_for)}"
        )
    if processes:
        lines.append(f"measured at {_at(processes[0].measured_at)} UTC")
    return lines
