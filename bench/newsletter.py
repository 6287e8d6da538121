"""A newsletter issue to 10,000 subscribers, end to end, against the SMTP ceiling.

    .venv/bin/python -m bench.newsletter [--recipients 10000]

Side by side, in one run, on this machine:
  - the ceiling: Postfix's smtp-source blasting messages of the same size at smtp-sink;
  - mailer with one worker process, then with two, sending a real issue (rendered,
    personalized, DKIM-signed with RSA-2048 and Ed25519, throttling and ledger included) to
    the same smtp-sink; the time is the issue's, from its start to its last recorded outcome.

Needs PostgreSQL and RabbitMQ as the tests do. smtp-sink and smtp-source come from Debian's
postfix package: when they are not installed, the package is downloaded and unpacked into
bench/.tools (the mail server itself is never installed or started).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from bench.table import print_table
from mailer.adapters import database
from mailer.adapters.broker import Broker
from mailer.adapters.subscribers import Subscribers
from mailer.core.audience import imported_person
from mailer.core.signing import generate_key
from mailer.core.tokens import derive_key

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "bench" / ".tools"
ADMIN_DSN = os.environ.get(
    "MAILER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
AMQP = "amqp://guest:guest@127.0.0.1:5672/"
SECRET = "bench-secret-key-that-is-long-enough-0123456789"


def postfix_tool(name: str) -> tuple[Path, dict[str, str]]:
    """smtp-sink / smtp-source, installed or unpacked from Debian's package."""
    found = shutil.which(name)
    if found:
        return Path(found), {}
    binary = TOOLS / "usr" / "sbin" / name
    if not binary.exists():
        TOOLS.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as download:
            subprocess.run(
                ["apt-get", "download", "postfix"], cwd=download, check=True, capture_output=True
            )
            (package,) = Path(download).glob("postfix_*.deb")
            subprocess.run(["dpkg-deb", "-x", str(package), str(TOOLS)], check=True)
    return binary, {"LD_LIBRARY_PATH": str(TOOLS / "usr" / "lib" / "postfix")}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_sink(port: int) -> subprocess.Popen[bytes]:
    sink, extra = postfix_tool("smtp-sink")
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    process = subprocess.Popen(
        [str(sink), *user, f"127.0.0.1:{port}", "1000"],
        env={**os.environ, **extra},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(50):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.1)
    raise RuntimeError("smtp-sink did not start")


def ceiling(port: int, messages: int, size: int) -> float:
    """Messages per second that smtp-source gets through to smtp-sink."""
    source, extra = postfix_tool("smtp-source")
    started = time.perf_counter()
    subprocess.run(
        [str(source), "-s", "8", "-m", str(messages), "-l", str(size), f"127.0.0.1:{port}"],
        env={**os.environ, **extra},
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return messages / (time.perf_counter() - started)


async def prepare(dsn: str, recipients: int) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    name = dsn.rsplit("/", 1)[1]
    await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await admin.close()
    await database.migrate(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    subscribers = Subscribers(pool)
    list_id = (await subscribers.list_ids(["lucid-news"]))["lucid-news"]
    hash_key = derive_key(SECRET.encode(), "address")
    for start in range(0, recipients, 10_000):
        batch = [
            imported_person(
                [f"person{n}@example{n % 50}.pl", f"Osoba {n}", "en" if n % 3 == 0 else "pl"],
                hash_key=hash_key,
            )
            for n in range(start, min(start + 10_000, recipients))
        ]
        await subscribers.import_rows(list_id, batch)
    await pool.close()


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True)


def fresh_vhost(vhost: str) -> None:
    """`vhost` made anew (whatever an earlier run left in it is gone), open to guest."""
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")


async def send_issue(dsn: str, amqp: str, env: dict[str, str], workers: int) -> tuple[float, int]:
    """Seconds from the issue's start to its end, and the messages it sent."""
    processes = []
    for n in range(workers):
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "mailer", "worker"],
                cwd=ROOT,
                env={
                    **env,
                    "MAILER_HTTP_PORT": str(free_port()),
                    "MAILER_ADMIN_PORT": str(free_port()),
                    "MAILER_SMTP_HELO_NAME": f"bench-{n}",
                },
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
    issue_id = uuid.uuid4()
    try:
        await asyncio.sleep(2)
        broker = Broker(amqp)
        await broker.connect()
        body = (ROOT / "examples" / "newsletter.json").read_text()
        body = re.sub(r'"id": "[0-9a-f-]+"', f'"id": "{issue_id}"', body, count=1)
        await broker.publish(body.encode(), routing_key="newsletter")
        await broker.close()
        conn = await asyncpg.connect(dsn)
        while (await conn.fetchval("SELECT state FROM issues WHERE id = $1", issue_id)) != "done":
            await asyncio.sleep(0.2)
        row = await conn.fetchrow(
            "SELECT extract(epoch FROM finished_at - started_at) AS seconds,"
            " (SELECT count(*) FROM deliveries WHERE job_id = $1 AND status = 'sent') AS sent"
            " FROM issues WHERE id = $1",
            issue_id,
        )
        await conn.close()
        assert row is not None
        return float(row["seconds"]), int(row["sent"])
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=10_000)
    args = parser.parse_args()
    port = free_port()
    sink = start_sink(port)
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + "/mailer_bench"
    vhost = "mailer-bench"
    keys = Path(tempfile.mkdtemp())
    rsa, ed = (
        generate_key("rsa", domain="lucid.example", selector="r"),
        generate_key("ed25519", domain="lucid.example", selector="e"),
    )
    for name, key in (("rsa.pem", rsa), ("ed.pem", ed)):
        (keys / name).write_bytes(key.pem)
        (keys / name).chmod(0o600)  # mailer refuses a key file others can read
    env = {
        "PATH": os.environ["PATH"],
        "MAILER_CONFIG": str(ROOT / "config" / "mailer.toml"),
        "MAILER_DATABASE_URL": dsn,
        "MAILER_BROKER_URL": AMQP + vhost,
        "MAILER_SMTP_URL": f"smtp://127.0.0.1:{port}?tls=none",
        "MAILER_SECURITY_SECRET_KEY": SECRET,
        "MAILER_LOG_LEVEL": "WARNING",
        "MAILER_DKIM_DOMAIN": "lucid.example",
        "MAILER_DKIM_SELECTOR": "r",
        "MAILER_DKIM_KEY_FILE": str(keys / "rsa.pem"),
        "MAILER_DKIM_ED25519_SELECTOR": "e",
        "MAILER_DKIM_ED25519_KEY_FILE": str(keys / "ed.pem"),
        "MAILER_NEWSLETTER_POOL_SIZE": "8",
    }
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
        top = ceiling(port, args.recipients, 8000)
        rows: list[tuple[str, float, int]] = [
            ("smtp-source → smtp-sink (the ceiling)", args.recipients / top, args.recipients)
        ]
        for workers in (1, 2):
            seconds, sent = await send_issue(dsn, AMQP + vhost, env, workers)
            plural = "es" if workers > 1 else ""
            rows.append((f"mailer, {workers} worker process{plural}", seconds, sent))
    finally:
        sink.terminate()
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)
        shutil.rmtree(keys)
    print_table(
        f"A newsletter issue to {args.recipients:,} recipients (2 cores, local smtp-sink)",
        ["sender", "seconds", "sent", "messages/s", "of the ceiling"],
        [
            (name, f"{s:.1f}", f"{n:,}", f"{n / s:,.0f}", f"{(n / s) / top:.0%}")
            for name, s, n in rows
        ],
    )


if __name__ == "__main__":
    asyncio.run(main())
