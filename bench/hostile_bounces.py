"""Hostile bounce reports: what each costs the classifier, and what they cost the service.

    .venv/bin/python -m bench.hostile_bounces [--before REV] [--seconds 20]

First table: seconds to classify each report of tests/support/hostile_bounces.py, in this
process (`classify_report`), through the classifier processes with their default 5 s limit
(what the service does), and, with --before, with the classifier of git revision REV (in a
process of its own, given up after 60 s).

Second table: one `mailer run` process (a local PostgreSQL and RabbitMQ, mail captured) gets
those reports over SMTP at its bounce receiver, three of them reports that run past any
time limit, while /healthz is asked every 20 ms: its p50, p99 and worst answer, the answers
that took over a second or failed, the reports classified within --seconds, the CPU seconds
of the service's own process and of its classifier processes, and how long SIGTERM then
takes. With --before, the same for revision REV's code (exported with `git archive`, its own
schema, this checkout's dependencies).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import aiohttp
import asyncpg

from bench.newsletter import ADMIN_DSN, AMQP, ROOT, SECRET, free_port, fresh_vhost
from bench.table import print_table
from mailer.core.addresses import address_key
from mailer.core.bounces.reports import classify_report
from mailer.core.return_paths import ReturnPathKeys, return_path
from mailer.core.tokens import derive_key
from mailer.worker.classifiers import ClassifierPool
from tests.support.bounces import send_report
from tests.support.hostile_bounces import HOSTILE, cubic_lines

DOMAIN = "bounces.lucid.example"
KEYS = ReturnPathKeys.from_secrets(SECRET.encode())
VERP = return_path(KEYS, 4242, date.today(), DOMAIN)
BEFORE_CAP = 60.0  # seconds a report may take with the old classifier before it is given up
IN_PROCESS_CAP = 10.0  # reports known to run longer are timed through the processes only

_TIME_ONE = """
import importlib.util, logging, sys, time
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)
spec = importlib.util.spec_from_file_location("before_bounces", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["before_bounces"] = module
spec.loader.exec_module(module)
raw = open(sys.argv[2], "rb").read()
started = time.perf_counter()
report = module.classify_report(raw)
print(f"{time.perf_counter() - started:.3f} {report.kind.value}")
"""


def before_time(module: Path, raw: bytes) -> str:
    with tempfile.NamedTemporaryFile(suffix=".eml") as report:
        report.write(raw)
        report.flush()
        try:
            done = subprocess.run(
                [sys.executable, "-c", _TIME_ONE, str(module), report.name],
                capture_output=True,
                text=True,
                timeout=BEFORE_CAP,
                check=True,
                cwd=ROOT,
            )
        except subprocess.TimeoutExpired:
            return f"> {BEFORE_CAP:.0f} (given up)"
    seconds, kind = done.stdout.split()
    return f"{float(seconds):.3f} {kind}"


async def per_report(before: str | None) -> None:
    module: Path | None = None
    if before is not None:
        source = subprocess.run(
            ["git", "show", f"{before}:mailer/core/bounces.py"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
        module = Path(tempfile.mkdtemp()) / "before_bounces.py"
        module.write_bytes(source)
    pool = ClassifierPool()
    await pool.classify(b"Subject: warm up\n\nhello\n")
    rows = []
    try:
        for one in HOSTILE:
            raw = one.make(VERP)
            if one.reason == "took longer than":
                now = "—"
            else:
                started = time.perf_counter()
                kind = classify_report(raw).kind.value
                now = f"{time.perf_counter() - started:.3f} {kind}"
            started = time.perf_counter()
            kind = (await pool.classify(raw)).kind.value
            pooled = f"{time.perf_counter() - started:.3f} {kind}"
            row = [one.name, f"{len(raw):,}", now, pooled]
            if module is not None:
                row.insert(2, before_time(module, raw))
            rows.append(row)
    finally:
        await pool.close()
    header = ["report", "bytes", "now, in process s", "now, classifier process s"]
    if before is not None:
        header.insert(2, f"{before} s")
    print_table("seconds to classify one hostile report, and what it ends as", header, rows)


# ---------------------------------------------------------------- the service


@dataclass
class Run:
    label: str
    stored: int
    classified: int
    latencies: list[float]
    slow: int  # answers over a second, or none at all
    main_cpu: float
    classifier_cpu: float
    stop_seconds: float


def _cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of a process, and of its children (ended, and running)."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    own, ended = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):
            child = stat.read_text().rpartition(")")[2].split()
            if int(child[1]) == pid:
                ended += int(child[11]) + int(child[12])
    return own / tick, ended / tick


async def _deliveries(dsn: str, count: int) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(dsn)
    hash_key = derive_key(SECRET.encode(), "address")
    made = []
    try:
        for n in range(count):
            job = uuid.uuid4()
            await conn.execute(
                "INSERT INTO jobs (id, kind, digest) VALUES ($1, 'receipt', '\\x00')", job
            )
            delivery_id: int = await conn.fetchval(
                "INSERT INTO deliveries (job_id, recipient_key, status) VALUES ($1, $2, 'sent')"
                " RETURNING id",
                job,
                address_key(hash_key, f"person{n}@example.pl"),
            )
            made.append((delivery_id, return_path(KEYS, delivery_id, date.today(), DOMAIN)))
    finally:
        await conn.close()
    return made


async def _healthz(url: str, latencies: list[float], stop: asyncio.Event) -> int:
    slow = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while not stop.is_set():
            started = time.monotonic()
            try:
                async with session.get(url) as response:
                    await response.read()
            except (aiohttp.ClientError, TimeoutError):
                slow += 1
            else:
                latencies.append(time.monotonic() - started)
                slow += latencies[-1] > 1
            await asyncio.sleep(0.02)
    return slow


async def _send(port: int, verp: str, raw: bytes) -> int | None:
    try:
        answer = await send_report(port, verp, raw)
    except (OSError, TimeoutError, Exception):  # a stalled receiver times out
        return None
    return int(answer.text.rsplit(" ", 1)[1]) if answer.code == 250 else None


async def service_run(label: str, code: Path, dsn: str, env: dict[str, str], seconds: float) -> Run:
    admin = await asyncpg.connect(ADMIN_DSN)
    name = dsn.rsplit("/", 1)[1]
    await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await admin.close()
    code_env = {**env, "PYTHONPATH": str(code)}
    subprocess.run(
        [sys.executable, "-m", "mailer", "migrate"],
        cwd=code,
        env=code_env,
        check=True,
        capture_output=True,
    )
    reports = [*(one.make for one in HOSTILE), cubic_lines, cubic_lines]
    made = await _deliveries(dsn, len(reports))
    http, bounces = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "run"],
        cwd=code,
        env={
            **code_env,
            "MAILER_HTTP_PORT": str(http),
            "MAILER_ADMIN_PORT": str(free_port()),
            "MAILER_BOUNCES_LISTEN": f"127.0.0.1:{bounces}",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{http}/healthz"
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        break
            await asyncio.sleep(0.1)
    cpu_before = _cpu(process.pid)
    latencies: list[float] = []
    stop = asyncio.Event()
    watching = asyncio.create_task(_healthz(url, latencies, stop))
    sent = await asyncio.gather(
        *(_send(bounces, verp, make(verp)) for make, (_, verp) in zip(reports, made, strict=True))
    )
    ids = [one for one in sent if one is not None]
    conn = await asyncpg.connect(dsn)
    deadline = time.monotonic() + seconds
    classified = 0
    while time.monotonic() < deadline:
        classified = await conn.fetchval(
            "SELECT count(*) FROM bounce_reports WHERE id = ANY($1) AND classified_at IS NOT NULL",
            ids,
        )
        if classified == len(reports):
            break
        await asyncio.sleep(0.2)
    await conn.close()
    stop.set()
    slow = await watching
    main_cpu, classifier_cpu = (b - a for a, b in zip(cpu_before, _cpu(process.pid), strict=True))
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    stop_seconds = time.monotonic() - started
    return Run(label, len(ids), classified, latencies, slow, main_cpu, classifier_cpu, stop_seconds)


async def service_runs(before: str | None, seconds: float) -> None:
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + "/mailer_bench_bounces"
    vhost = "mailer-bench-bounces"
    outbox = tempfile.mkdtemp()
    env = {
        "PATH": os.environ["PATH"],
        "MAILER_CONFIG": str(ROOT / "config" / "mailer.toml"),
        "MAILER_DATABASE_URL": dsn,
        "MAILER_BROKER_URL": AMQP + vhost,
        "MAILER_SMTP_CAPTURE": "true",
        "MAILER_SMTP_CAPTURE_DIR": outbox,
        "MAILER_SECURITY_SECRET_KEY": SECRET,
        "MAILER_LOG_LEVEL": "ERROR",
        "MAILER_BOUNCES_DOMAIN": DOMAIN,
    }
    fresh_vhost(vhost)
    runs = []
    try:
        if before is not None:
            tree = Path(tempfile.mkdtemp())
            archive = subprocess.run(
                ["git", "archive", before], cwd=ROOT, capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
            env_before = {**env, "MAILER_CONFIG": str(tree / "config" / "mailer.toml")}
            runs.append(await service_run(before, tree, dsn, env_before, seconds))
        runs.append(await service_run("now", ROOT, dsn, env, seconds))
    finally:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, check=False
        )
    rows = []
    for run in runs:
        ms = sorted(1000 * one for one in run.latencies) or [float("nan")]
        rows.append(
            (
                run.label,
                f"{run.classified}/{run.stored}",
                len(ms),
                f"{statistics.median(ms):.1f}",
                f"{ms[min(len(ms) - 1, int(0.99 * len(ms)))]:.1f}",
                f"{ms[-1]:.0f}",
                run.slow,
                f"{run.main_cpu:.2f}",
                f"{run.classifier_cpu:.2f}",
                f"{run.stop_seconds:.1f}",
            )
        )
    print_table(
        f"`mailer run` given 8 hostile reports over SMTP, /healthz every 20 ms (for {seconds:g} s"
        " at most, until all are classified)",
        (
            "code",
            "classified",
            "answers",
            "p50 ms",
            "p99 ms",
            "worst ms",
            "over 1 s or none",
            "CPU service s",
            "CPU classifiers s",
            "SIGTERM to exit s",
        ),
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", metavar="REV", help="also time the code of this revision")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    asyncio.run(per_report(args.before))
    asyncio.run(service_runs(args.before, args.seconds))


if __name__ == "__main__":
    main()
