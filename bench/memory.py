"""Peak memory of a worker process with 32 large receipts in flight, before and after.

    .venv/bin/python -m bench.memory [--receipts 32] [--megabytes 10]

A real worker process (`mailer.service.Service`, worker only) takes receipts from RabbitMQ
(prefetch 32, relay pool 4) and sends them to an SMTP server in this process that answers
DATA after 0.5 s, so that every receipt is in hand at once. Side by side, in one run:
  - before: each message composed and signed as soon as its job is decoded, on the event
    loop, then waiting for a relay connection (the order before relay sessions);
  - after: composed and signed only once a relay connection is held, large ones in a thread.
The figure is the worker's peak resident set (VmHWM), and its resident set once started.

Needs PostgreSQL and RabbitMQ as the tests do.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import asyncpg

from bench.table import print_table
from mailer.adapters import database
from mailer.adapters.broker import Broker
from mailer.core.signing import generate_key

ROOT = Path(__file__).resolve().parent.parent
ADMIN_DSN = os.environ.get(
    "MAILER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
AMQP = "amqp://guest:guest@127.0.0.1:5672/"
SECRET = "bench-secret-key-that-is-long-enough-0123456789"
MODES = ("before", "after")


def _compose_before_the_slot() -> None:
    """The order before relay sessions: build on the loop, then wait for a connection."""
    from mailer.assembly import worker as worker_assembly
    from mailer.core.messages import Draft
    from mailer.core.outcomes import Outcome, classify, transport_failure
    from mailer.errors import TemporaryFailure
    from mailer.worker.sending import Sender

    class EagerSender(Sender):
        async def send(
            self,
            draft: Draft,
            now: datetime,
            still_wanted: Callable[[], bool] | None = None,
            *,
            delivery_id: int | None = None,
        ) -> Outcome:
            message = self.signer.sign(self.composer(draft), int(now.timestamp()))
            sender = self.return_path or draft.sender.address
            try:
                reply = await self.relay.send(sender, draft.to.address, message, still_wanted)
            except TemporaryFailure as exc:
                return transport_failure(str(exc))
            return classify(reply)

    worker_assembly.Sender = EagerSender  # type: ignore[attr-defined]


def child(mode: str) -> None:
    """The worker process: runs until SIGTERM."""
    from mailer.config import load_settings
    from mailer.service import Service

    if mode == "before":
        _compose_before_the_slot()
    settings, _ = load_settings()
    asyncio.run(Service(settings, run_web=False).run_until_signalled())


def status(pid: int, field: str) -> int:
    """A /proc/PID/status figure in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def job(size: int) -> bytes:
    attachment = base64.b64encode(os.urandom(size)).decode()
    return json.dumps(
        {
            "kind": "receipt",
            "version": 1,
            "id": str(uuid.uuid4()),
            "to": {"email": "jan.kowalski@example.pl", "name": "Jan Kowalski"},
            "locale": "pl",
            "data": {
                "order_number": "ZAM/2026/11/0042",
                "placed_at": "2026-11-24T10:15:00+01:00",
                "currency": "PLN",
                "items": [
                    {"name": "Licencja", "quantity": 1, "unit_price": "1200.00", "vat_rate": "23"}
                ],
                "total": "1476.00",
            },
            "attachments": [
                {"filename": "FV.pdf", "content_type": "application/pdf", "data_base64": attachment}
            ],
        }
    ).encode()


async def measure(
    mode: str, env: dict[str, str], receipts: int, size: int, limit: float
) -> tuple[int, int, float | None, int]:
    """Resident once started and peak resident in kB, seconds until all were sent (None if
    not within `limit`), and how many were sent."""
    dsn = env["MAILER_DATABASE_URL"]
    admin = await asyncpg.connect(ADMIN_DSN)
    name = dsn.rsplit("/", 1)[1]
    await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await admin.close()
    await database.migrate(dsn)
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.memory", "--child", mode],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        conn = await asyncpg.connect(dsn)
        broker = Broker(env["MAILER_BROKER_URL"])
        await broker.connect()
        for _ in range(600):  # the worker declares its queues when it starts
            if (
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name
                )
                > 2
            ):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)
        started = status(process.pid, "VmRSS")
        bodies = [job(size) for _ in range(receipts)]
        began = time.monotonic()
        for body in bodies:
            await broker.publish(body, routing_key="receipt")
        del bodies
        await broker.close()
        sent, seconds = 0, None
        while time.monotonic() - began < limit:
            sent = await conn.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'")
            if sent >= receipts:
                seconds = time.monotonic() - began
                break
            if process.poll() is not None:
                raise RuntimeError(process.stderr.read().decode() if process.stderr else "died")
            await asyncio.sleep(0.2)
        peak = status(process.pid, "VmHWM")
        await conn.close()
        return started, peak, seconds, sent
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)


async def main() -> None:
    from tests.support.smtp import SmtpServer

    parser = argparse.ArgumentParser()
    parser.add_argument("--receipts", type=int, default=32)
    parser.add_argument("--megabytes", type=float, default=10.0)
    parser.add_argument("--limit", type=float, default=300.0, help="seconds per mode")
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    size = int(args.megabytes * 1_000_000)
    server = SmtpServer(data_delay=0.5, data_size_limit=64_000_000)
    await server.start()
    vhost = "mailer-bench-memory"
    keys = Path(tempfile.mkdtemp())
    key = generate_key("rsa", domain="lucid.example", selector="r")
    (keys / "rsa.pem").write_bytes(key.pem)
    (keys / "rsa.pem").chmod(0o600)
    env = {
        "PATH": os.environ["PATH"],
        "MAILER_CONFIG": str(ROOT / "config" / "mailer.toml"),
        "MAILER_DATABASE_URL": ADMIN_DSN.rsplit("/", 1)[0] + "/mailer_bench_memory",
        "MAILER_BROKER_URL": AMQP + vhost,
        "MAILER_BROKER_PREFETCH": "32",
        "MAILER_SMTP_URL": f"smtp://127.0.0.1:{server.port}?tls=none",
        "MAILER_SMTP_POOL_SIZE": "4",
        "MAILER_SMTP_TIMEOUT": "120",
        "MAILER_SECURITY_SECRET_KEY": SECRET,
        "MAILER_LOG_LEVEL": "WARNING",
        "MAILER_DKIM_DOMAIN": "lucid.example",
        "MAILER_DKIM_SELECTOR": "r",
        "MAILER_DKIM_KEY_FILE": str(keys / "rsa.pem"),
    }
    rows = []
    try:
        for mode in args.modes.split(","):
            subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)
            subprocess.run(
                ["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True
            )
            subprocess.run(
                ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                check=True,
                capture_output=True,
            )
            print(f"{mode}: {args.receipts} receipts of {args.megabytes:g} MB…", file=sys.stderr)
            started, peak, seconds, sent = await measure(mode, env, args.receipts, size, args.limit)
            rows.append((mode, started, peak, seconds, sent))
            server.received.clear()
    finally:
        await server.stop()
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)
        shutil.rmtree(keys)
    print_table(
        f"Worker memory, {args.receipts} receipts with a {args.megabytes:g} MB attachment in "
        "flight (prefetch 32, relay pool 4, relay answering after 0.5 s)",
        ["message built", "RSS started (MB)", "peak RSS (MB)", "growth (MB)", "sent", "seconds"],
        [
            (
                "before: on decode, on the loop" if mode == "before" else "after: in a relay slot",
                f"{started / 1024:.0f}",
                f"{peak / 1024:.0f}",
                f"{(peak - started) / 1024:.0f}",
                f"{sent}/{args.receipts}",
                f"{seconds:.1f}" if seconds is not None else f"> {args.limit:g}",
            )
            for mode, started, peak, seconds, sent in rows
        ],
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
    else:
        asyncio.run(main())
