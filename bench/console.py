"""The console while a large issue sends: page times, and what it costs the sending.

    .venv/bin/python -m bench.console [--recipients 100000]

One `mailer run` process sends an issue to a local Postfix smtp-sink (as bench.newsletter
does), three times (repeated, interleaved, with --rounds): with nobody looking; with an
operator's browser loading the overview, the issue's page and the issues list every 5 s (the
pages' own refresh); and every second.
Each run starts from the same ledger (the last run's rows truncated, then VACUUM ANALYZE and
CHECKPOINT). Prints, for each run side by side: the issue's throughput; the CPU time of the
`mailer run` process while it sent; and the CPU time of the whole machine (PostgreSQL, where
the console's queries run, included), less this benchmark's own, which plays the operator's
browser. Wall time on a shared 2-core machine varies by ±20% from run to run; CPU time is
what the console costs, and is steady. Then the means per setting, and each page's p50, p95
and worst load time in the watched runs. Ratios are against the mean of the unwatched runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg

from bench.newsletter import AMQP, ROOT, SECRET, free_port, fresh_vhost, prepare, start_sink
from bench.table import print_table
from mailer.adapters.broker import Broker
from mailer.adapters.operators import Operators
from mailer.core.passwords import hash_password
from mailer.core.signing import generate_key

PASSWORD = "bench password, long enough"
INTERVALS = (None, 5.0, 1.0)  # seconds between an operator's page loads; None: nobody looks


async def add_operator(dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    await Operators(pool).add("bench", "viewer", hash_password(PASSWORD))
    await pool.close()


async def look(
    url: str, issue_id: uuid.UUID, interval: float, stop: asyncio.Event
) -> dict[str, list[float]]:
    """An operator's browser: log in, then load the console's pages until told to stop."""
    times: dict[str, list[float]] = {"/": [], f"/issues/{issue_id}": [], "/issues": []}
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.post(
            url + "/login",
            data={"name": "bench", "password": PASSWORD},
            headers={"Origin": url},
            allow_redirects=False,
        ) as response:
            assert response.status == 303, response.status
        while not stop.is_set():
            for path, found in times.items():
                started = time.perf_counter()
                async with http.get(url + path) as response:
                    await response.read()
                    assert response.status == 200, (path, response.status)
                found.append(time.perf_counter() - started)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
    return times


@dataclass(frozen=True)
class Run:
    seconds: float
    sent: int
    times: dict[str, list[float]]
    mailer_cpu: float
    machine_cpu: float

    @property
    def rate(self) -> float:
        return self.sent / self.seconds


def machine_cpu() -> float:
    """CPU seconds the whole machine has been busy (every process: PostgreSQL, RabbitMQ and
    the sink included; idle, I/O wait and steal not), less this benchmark's own, which
    plays the operator's browser and would run elsewhere."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = ticks
    own = resource.getrusage(resource.RUSAGE_SELF)
    busy = (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
    return busy - own.ru_utime - own.ru_stime


async def reset(dsn: str) -> None:
    """Each run starts from the same ledger: the last run's rows gone, statistics fresh, and
    dirty pages written, so that no run pays for its predecessor's vacuum or checkpoint."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE deliveries, issues, jobs CASCADE")
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def send(dsn: str, env: dict[str, str], *, watch: bool, interval: float) -> Run:
    await reset(dsn)
    admin_port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "run"],
        cwd=ROOT,
        env={**env, "MAILER_HTTP_PORT": str(free_port()), "MAILER_ADMIN_PORT": str(admin_port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    issue_id = uuid.uuid4()
    url = f"http://127.0.0.1:{admin_port}"
    try:
        await asyncio.sleep(3)
        broker = Broker(env["MAILER_BROKER_URL"])
        await broker.connect()
        body = (ROOT / "examples" / "newsletter.json").read_text()
        body = re.sub(r'"id": "[0-9a-f-]+"', f'"id": "{issue_id}"', body, count=1)
        await broker.publish(body.encode(), routing_key="newsletter")
        await broker.close()
        conn = await asyncpg.connect(dsn)
        while (await conn.fetchval("SELECT state FROM issues WHERE id = $1", issue_id)) is None:
            await asyncio.sleep(0.1)
        busy_before, mailer_before = machine_cpu(), cpu_seconds(process.pid)
        stop = asyncio.Event()
        watcher = asyncio.create_task(look(url, issue_id, interval, stop)) if watch else None
        while (await conn.fetchval("SELECT state FROM issues WHERE id = $1", issue_id)) != "done":
            await asyncio.sleep(0.2)
        busy = machine_cpu() - busy_before
        mailer = cpu_seconds(process.pid) - mailer_before
        stop.set()
        times = await watcher if watcher is not None else {}
        row = await conn.fetchrow(
            "SELECT extract(epoch FROM finished_at - started_at) AS seconds,"
            " (SELECT count(*) FROM deliveries WHERE job_id = $1 AND status = 'sent') AS sent"
            " FROM issues WHERE id = $1",
            issue_id,
        )
        await conn.close()
        assert row is not None
        return Run(float(row["seconds"]), int(row["sent"]), times, mailer, busy)
    finally:
        process.terminate()
        process.wait(timeout=60)


def cpu_seconds(pid: int) -> float:
    """CPU time the process has used (user + system): steadier than wall time on a shared
    machine, and it counts what the console's pages cost the worker's own process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat the three runs, interleaved, this often"
    )
    args = parser.parse_args()
    intervals = INTERVALS * args.rounds
    port = free_port()
    sink = start_sink(port)
    dsn = (
        os.environ.get(
            "MAILER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ).rsplit("/", 1)[0]
        + "/mailer_bench_console"
    )
    vhost = "mailer-bench-console"
    keys = Path(tempfile.mkdtemp())
    key = generate_key("ed25519", domain="lucid.example", selector="e")
    (keys / "ed.pem").write_bytes(key.pem)
    (keys / "ed.pem").chmod(0o600)
    env = {
        "PATH": os.environ["PATH"],
        "MAILER_CONFIG": str(ROOT / "config" / "mailer.toml"),
        "MAILER_DATABASE_URL": dsn,
        "MAILER_BROKER_URL": AMQP + vhost,
        "MAILER_SMTP_URL": f"smtp://127.0.0.1:{port}?tls=none",
        "MAILER_SECURITY_SECRET_KEY": SECRET,
        "MAILER_LOG_LEVEL": "WARNING",
        "MAILER_DKIM_DOMAIN": "lucid.example",
        "MAILER_DKIM_SELECTOR": "e",
        "MAILER_DKIM_KEY_FILE": str(keys / "ed.pem"),
        "MAILER_NEWSLETTER_POOL_SIZE": "8",
    }
    results = []
    try:
        print(f"preparing {args.recipients:,} subscribers…", file=sys.stderr)
        await prepare(dsn, args.recipients)
        await add_operator(dsn)
        fresh_vhost(vhost)
        subprocess.run(
            [sys.executable, "-m", "mailer", "migrate"],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        for interval in intervals:
            what = "nobody looking" if interval is None else f"pages loaded every {interval:g} s"
            print(f"sending, {what}…", file=sys.stderr)
            results.append(await send(dsn, env, watch=interval is not None, interval=interval or 0))
    finally:
        sink.terminate()
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)
        shutil.rmtree(keys)
    idle = [result for interval, result in zip(intervals, results, strict=True) if interval is None]
    idle_rate = statistics.mean(run.rate for run in idle)
    idle_cpu = statistics.mean(run.mailer_cpu for run in idle)
    idle_busy = statistics.mean(run.machine_cpu for run in idle)
    print_table(
        f"An issue to {args.recipients:,} recipients, one `mailer run` (2 cores, local smtp-sink);"
        " CPU seconds while it sent, ratios against the mean of the runs nobody watched",
        [
            "console",
            "seconds",
            "messages/s",
            "vs nobody looking",
            "mailer CPU s",
            "vs nobody looking",
            "machine CPU s",
            "vs nobody looking",
        ],
        [
            (
                "nobody looking" if interval is None else f"3 pages loaded every {interval:g} s",
                f"{run.seconds:.1f}",
                f"{run.rate:,.0f}",
                f"{run.rate / idle_rate:.1%}",
                f"{run.mailer_cpu:.1f}",
                f"{run.mailer_cpu / idle_cpu:.1%}",
                f"{run.machine_cpu:.1f}",
                f"{run.machine_cpu / idle_busy:.1%}",
            )
            for interval, run in zip(intervals, results, strict=True)
        ],
    )
    means = []
    for watched in dict.fromkeys(intervals):
        runs = [r for i, r in zip(intervals, results, strict=True) if i == watched]
        means.append(
            (
                "nobody looking" if watched is None else f"3 pages loaded every {watched:g} s",
                len(runs),
                f"{statistics.mean(r.rate for r in runs) / idle_rate:.1%}",
                f"{statistics.mean(r.mailer_cpu for r in runs) / idle_cpu:.1%}",
                f"{statistics.mean(r.machine_cpu for r in runs) / idle_busy:.1%}",
            )
        )
    print_table(
        "Means per setting, against nobody looking",
        ["console", "runs", "messages/s", "mailer CPU", "machine CPU"],
        means,
    )
    print_table(
        "Console page loads while it sends (ms)",
        ["pages loaded every", "page", "loads", "p50", "p95", "worst"],
        [
            (
                f"{interval:g} s",
                "/issues/ID" if path.startswith("/issues/") else path,
                len(found),
                f"{quantile(found, 0.5) * 1000:.0f}",
                f"{quantile(found, 0.95) * 1000:.0f}",
                f"{max(found) * 1000:.0f}",
            )
            for interval, run in zip(intervals, results, strict=True)
            if interval is not None
            for path, found in run.times.items()
            if len(found) > 1
        ],
    )


if __name__ == "__main__":
    asyncio.run(main())
