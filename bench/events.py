"""Events back to the portal: what the outbox and its relay cost and how fast they go.

    .venv/bin/python -m bench.events [--recipients 5000] [--events 20000] [--rate 1000]

Side by side, in one run, on this machine:
  - events per second from the outbox to mailer.events: `--events` events written, then
    one relay publishing them (confirmed, marked) to a portal's quorum queue bound to `#`;
  - the CPU a newsletter message costs with its events; with its events written but the
    relay not running in the worker (what the write in the outcome's transaction costs);
    and with the outbox write removed (`outbox.append` a no-op in the worker process, the
    relay not running: no event row, nothing to publish), each twice, in turn, after an
    issue that warms the worker and the database up and is not counted: an issue to
    `--recipients` people sent by one `mailer worker` at `[newsletter] rate` = `--rate`
    messages/s to a discarding SMTP sink in a process of its own. CPU: the worker process
    and the PostgreSQL backends serving the bench's database (RabbitMQ's is not counted),
    from the issue's publish until every event is published;
  - with events, from each message event's change (its `occurred_at`, stamped just before
    its transaction commits) to its arrival at a portal consuming the quorum queue (after
    the broker's confirm, so the figure bounds commit → publish from above): p50, p99, max.

Needs PostgreSQL and RabbitMQ as the tests do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import aio_pika
import asyncpg

from bench.newsletter import ADMIN_DSN, AMQP, ROOT, SECRET, free_port, fresh_vhost, prepare
from bench.table import print_table
from mailer.adapters import outbox
from mailer.adapters.broker import Broker
from mailer.config import EventsSettings
from mailer.core.signing import generate_key
from mailer.metrics import Metrics
from mailer.parts.events import EventRelay

TICK = os.sysconf("SC_CLK_TCK")

_SINK = """
import asyncio, sys
from aiosmtpd.controller import Controller

class Discard:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 Ok: discarded"

controller = Controller(Discard(), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
asyncio.run(asyncio.Event().wait())
"""
_WORKER = """
import sys
if sys.argv[1] == "off":
    import mailer.adapters.outbox as outbox

    async def _no_events(conn, events):
        return 0

    outbox.append = _no_events
if sys.argv[1] in ("off", "written"):
    from mailer.parts.events import EventRelay

    async def _idle():
        pass

    EventRelay.start = lambda self: _idle()
    EventRelay.stop = lambda self: _idle()
from mailer.cli import main
raise SystemExit(main(["worker"]))
"""
MODES = {
    "on": "events on",
    "written": "events written, relay off",
    "off": "outbox write and relay removed",
}


def start_sink(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", _SINK, str(port)], cwd=ROOT)
    for _ in range(100):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.1)
    raise RuntimeError("the SMTP sink did not start")


def cpu_seconds(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


async def backends(conn: asyncpg.Connection, name: str) -> set[int]:
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
        " AND backend_type = 'client backend'",  # not autovacuum: it comes when it likes
        name,
    )
    return {r["pid"] for r in rows}


async def portal_queue(amqp: str) -> aio_pika.abc.AbstractRobustConnection:
    """A portal's durable quorum queue bound to every event."""
    connection = await aio_pika.connect_robust(amqp)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(
        "mailer.events", aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue(
        "bench.portal", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(exchange, routing_key="#")
    await queue.purge()
    return connection


async def relay_throughput(dsn: str, amqp: str, count: int) -> float:
    """Events per second from the outbox, through one relay, to a confirmed publish."""
    conn = await asyncpg.connect(dsn)
    await conn.execute("DELETE FROM events")
    job = uuid.uuid4()
    for start in range(0, count, 500):
        async with conn.transaction():
            await outbox.append(
                conn,
                [
                    outbox.event(
                        "message.delivered",
                        job_id=job,
                        kind="newsletter",
                        list_slug="lucid-news",
                        recipient=f"person{n}@example.pl",
                        message_id=f"<{n}.{job}@lucid.example>",
                        detail={"reply": "250 2.0.0 Ok: queued as 4Xyz"},
                    )
                    for n in range(start, min(start + 500, count))
                ],
            )
    portal = await portal_queue(amqp)
    broker = Broker(amqp, name="bench events relay")
    await broker.connect()
    relay = EventRelay(dsn, broker.publish_event, EventsSettings(), Metrics())
    started = time.perf_counter()
    await relay.start()
    while await conn.fetchval("SELECT count(*) FROM events WHERE published_at IS NULL"):
        await asyncio.sleep(0.05)
    took = time.perf_counter() - started
    await relay.stop()
    await broker.close()
    await portal.close()
    await conn.execute("DELETE FROM events")
    await conn.close()
    return count / took


@dataclass(frozen=True)
class Run:
    mode: str
    sent: int
    send_seconds: float
    cpu: float  # seconds: the worker and the database's backends
    worker_cpu: float  # seconds: the worker process alone
    delays: list[float]  # seconds from each message event's change to its arrival


class Arrivals:
    """A portal consuming bench.portal: for each message event, the seconds from its change
    (`occurred_at`, stamped just before the change's commit) to its arrival here."""

    def __init__(self, connection: aio_pika.abc.AbstractRobustConnection) -> None:
        self._connection = connection
        self.delays: dict[str, float] = {}  # by event id: a repeat keeps the first arrival

    async def start(self) -> None:
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=1000)
        queue = await channel.declare_queue(
            "bench.portal", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.consume(self._take, no_ack=True)

    async def _take(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        arrived = time.time()
        event = json.loads(message.body)
        if event["type"].startswith("message.") and event["id"] not in self.delays:
            happened = datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00"))
            self.delays[event["id"]] = arrived - happened.timestamp()


async def send_issue(
    dsn: str, amqp: str, env: dict[str, str], *, mode: str, arrivals: Arrivals
) -> Run:
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, mode],
        cwd=ROOT,
        env={**env, "MAILER_HTTP_PORT": str(free_port()), "MAILER_ADMIN_PORT": str(free_port())},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    name = dsn.rsplit("/", 1)[1]
    conn = await asyncpg.connect(dsn)
    issue_id = uuid.uuid4()
    try:
        await asyncio.sleep(3)  # started, its pool and relay connected
        watched = {worker.pid} | await backends(conn, name)
        before = cpu_seconds(watched)
        worker_before = cpu_seconds({worker.pid})
        broker = Broker(amqp, name="bench portal")
        await broker.connect()
        body = (ROOT / "examples" / "newsletter.json").read_text()
        body = re.sub(r'"id": "[0-9a-f-]+"', f'"id": "{issue_id}"', body, count=1)
        await broker.publish(body.encode(), routing_key="newsletter")
        await broker.close()
        while (await conn.fetchval("SELECT state FROM issues WHERE id = $1", issue_id)) != "done":
            await asyncio.sleep(0.2)
        while mode == "on" and await conn.fetchval(
            "SELECT count(*) FROM events WHERE published_at IS NULL"
        ):
            await asyncio.sleep(0.1)
        watched |= await backends(conn, name)
        cpu = cpu_seconds(watched) - before
        worker_cpu = cpu_seconds({worker.pid}) - worker_before
        row = await conn.fetchrow(
            "SELECT extract(epoch FROM finished_at - started_at) AS seconds,"
            " (SELECT count(*) FROM deliveries WHERE job_id = $1 AND status = 'sent') AS sent"
            " FROM issues WHERE id = $1",
            issue_id,
        )
        assert row is not None
        wanted = await conn.fetchval(
            "SELECT count(*) FROM events WHERE type LIKE 'message.%' AND published_at IS NOT NULL"
        )
        deadline = time.monotonic() + 30
        while len(arrivals.delays) < wanted and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        delays = list(arrivals.delays.values())
        arrivals.delays.clear()
        await conn.execute("DELETE FROM events")  # none left for the next run to publish
    finally:
        await conn.close()
        worker.terminate()
        worker.wait(timeout=60)
    return Run(mode, int(row["sent"]), float(row["seconds"]), cpu, worker_cpu, delays)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=5_000)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1000)
    args = parser.parse_args()
    port = free_port()
    sink = start_sink(port)
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + "/mailer_bench_events"
    vhost = "mailer-bench-events"
    amqp = AMQP + vhost
    keys = Path(tempfile.mkdtemp())
    rsa, ed = (
        generate_key("rsa", domain="lucid.example", selector="r"),
        generate_key("ed25519", domain="lucid.example", selector="e"),
    )
    for name, key in (("rsa.pem", rsa), ("ed.pem", ed)):
        (keys / name).write_bytes(key.pem)
        (keys / name).chmod(0o600)
    env = {
        "PATH": os.environ["PATH"],
        "MAILER_CONFIG": str(ROOT / "config" / "mailer.toml"),
        "MAILER_DATABASE_URL": dsn,
        "MAILER_BROKER_URL": amqp,
        "MAILER_SMTP_URL": f"smtp://127.0.0.1:{port}?tls=none",
        "MAILER_SECURITY_SECRET_KEY": SECRET,
        "MAILER_LOG_LEVEL": "WARNING",
        "MAILER_DKIM_DOMAIN": "lucid.example",
        "MAILER_DKIM_SELECTOR": "r",
        "MAILER_DKIM_KEY_FILE": str(keys / "rsa.pem"),
        "MAILER_DKIM_ED25519_SELECTOR": "e",
        "MAILER_DKIM_ED25519_KEY_FILE": str(keys / "ed.pem"),
        "MAILER_NEWSLETTER_POOL_SIZE": "8",
        "MAILER_NEWSLETTER_RATE": str(args.rate),
    }
    runs: list[Run] = []
    try:
        print(f"preparing {args.recipients:,} subscribers…", file=sys.stderr)
        await prepare(dsn, args.recipients)
        fresh_vhost(vhost)
        subprocess.run(
            [sys.executable, "-m", "mailer", "migrate"],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        print(f"relaying {args.events:,} events…", file=sys.stderr)
        per_second = await relay_throughput(dsn, amqp, args.events)
        vacuum = await asyncpg.connect(dsn)
        await vacuum.execute("VACUUM ANALYZE")  # the rows the throughput run left dead
        await vacuum.close()
        portal = await portal_queue(amqp)
        arrivals = Arrivals(portal)
        await arrivals.start()
        print("a first issue, to warm up (not counted)…", file=sys.stderr)
        await send_issue(dsn, amqp, env, mode="off", arrivals=arrivals)
        for mode in (*MODES, *MODES):
            print(f"an issue, {MODES[mode]}…", file=sys.stderr)
            runs.append(await send_issue(dsn, amqp, env, mode=mode, arrivals=arrivals))
        await portal.close()
    finally:
        sink.terminate()
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)
        shutil.rmtree(keys)
    print_table(
        "Outbox → mailer.events, one relay, confirmed, to a quorum queue (2 cores)",
        ["events", "events/s"],
        [(f"{args.events:,}", f"{per_second:,.0f}")],
    )
    per_message = {
        mode: statistics.mean(r.cpu / r.sent for r in runs if r.mode == mode) for mode in MODES
    }
    off = per_message["off"]
    print_table(
        f"A newsletter to {args.recipients:,} at up to {args.rate:,.0f} msg/s, one worker:"
        " CPU of the worker and its database backends",
        [
            *("run", "sent", "msg/s", "CPU ms/msg", "worker", "database", "vs no events"),
            *("p50 s", "p99 s", "max s"),
        ],
        [
            (
                MODES[r.mode],
                f"{r.sent:,}",
                f"{r.sent / r.send_seconds:,.0f}",
                f"{1000 * r.cpu / r.sent:.3f}",
                f"{1000 * r.worker_cpu / r.sent:.3f}",
                f"{1000 * (r.cpu - r.worker_cpu) / r.sent:.3f}",
                f"{(r.cpu / r.sent) / off - 1:+.1%}",
                f"{statistics.median(r.delays):.3f}" if r.delays else "-",
                f"{percentile(r.delays, 0.99):.3f}" if r.delays else "-",
                f"{max(r.delays):.3f}" if r.delays else "-",
            )
            for r in runs
        ],
    )
    for mode in ("written", "on"):
        print(
            f"\nadded CPU per message, {MODES[mode]}: {per_message[mode] / off - 1:+.1%}"
            f" ({1000 * (per_message[mode] - off):+.3f} ms; mean of two runs each)"
        )
    print(f"retention: {timedelta(days=EventsSettings().retention_days)} (default)")


if __name__ == "__main__":
    asyncio.run(main())
