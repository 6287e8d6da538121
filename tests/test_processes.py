"""Newsletters across real worker processes: crashes and company."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import Counter
from typing import Any

import asyncpg

from mailer.adapters.broker import Broker
from mailer.parts.worker import DISPATCH_LOOPS
from mailer.worker.recording import RECORD_WINDOW
from tests.conftest import StartService
from tests.support.jobs import encode
from tests.support.newsletters import issue, outcomes, people, subscribe, until_state
from tests.support.processes import amailer, environment, free_port, start
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually


async def publish(broker_url: str, job: dict[str, Any]) -> None:
    portal = Broker(broker_url)
    await portal.connect()
    try:
        await portal.publish(encode(job), routing_key="newsletter")
    finally:
        await portal.close()


def stop(process: subprocess.Popen[str], how: signal.Signals = signal.SIGTERM) -> str:
    process.send_signal(how)
    _, stderr = process.communicate(timeout=60)
    return stderr


async def test_a_worker_killed_mid_issue_leaves_nobody_missing(
    config: dict[str, Any],
    start_service: StartService,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
    broker_url: str,
) -> None:
    audience = people(400)
    await subscribe(database_url, audience)
    smtp_server.data_delay = 0.005
    config["http"]["port"] = free_port()
    config["newsletter"] = {"chunk_size": 200, "pool_size": 4}  # two chunks hold everyone
    env = environment(config)
    assert (await amailer("migrate", env=env)).returncode == 0
    worker = start("worker", env=env)
    job = issue()
    try:
        await publish(broker_url, job)

        async def midway() -> bool:
            return len(smtp_server.received) >= 100

        await eventually(midway, timeout=60)
    finally:
        worker.send_signal(signal.SIGKILL)  # no drain, no goodbye
        await asyncio.to_thread(worker.communicate, timeout=30)
    assert len(smtp_server.received) < 400
    assert await db.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sending'") > 0

    await start_service(config)  # claims lapse after the lease (3 s in tests); then it resumes
    await until_state(db, job["id"], "done", timeout=60)
    counts = Counter(m.rcpt_tos[0] for m in smtp_server.received)
    assert set(counts) == {email for email, _, _ in audience}  # nobody missing
    # Only what the killed worker had handed to the relay without recording can repeat: a
    # window per chunk in hand, however large the chunk.
    assert sum(counts.values()) - 400 <= RECORD_WINDOW * DISPATCH_LOOPS
    assert await outcomes(db, job["id"]) == {"sent": 400}


async def test_two_worker_processes_on_one_issue_send_one_copy_each(
    config: dict[str, Any],
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
    broker_url: str,
) -> None:
    audience = people(1000)
    await subscribe(database_url, audience)
    config["newsletter"] = {"chunk_size": 50}
    envs = []
    for name in ("worker-a", "worker-b"):
        config["http"]["port"] = free_port()
        envs.append(environment(config, MAILER_SMTP_HELO_NAME=name))
    assert (await amailer("migrate", env=envs[0])).returncode == 0
    workers = [start("worker", env=env) for env in envs]
    job = issue()
    try:
        await asyncio.sleep(2)  # both up and polling
        await publish(broker_url, job)
        await until_state(db, job["id"], "done", timeout=120)
    finally:
        logs = [await asyncio.to_thread(stop, worker) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), logs
    counts = Counter(m.rcpt_tos[0] for m in smtp_server.received)
    assert counts == Counter({email: 1 for email, _, _ in audience})
    assert {m.helo for m in smtp_server.received} == {"worker-a", "worker-b"}  # both sent
