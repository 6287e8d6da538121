"""Every mailer.* queue with ready, unacked and consumers, without RabbitMQ's management
plugin: a real worker process holding receipts that a slow relay has not answered yet shows
them as unacked, on /metrics, in `mailer workers` and to the console, and 0 once they are
sent."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import asyncpg

from mailer.adapters.broker import Broker
from mailer.adapters.queues import QueueState, queue_names, queue_states
from mailer.adapters.workers import Workers
from tests.conftest import StartService
from tests.support.http import metric
from tests.support.jobs import encode, receipt
from tests.support.processes import amailer, environment, free_port, mailer, start
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually


async def _alive(workers: Workers) -> bool:
    return any(process.presence == "alive" for process in await workers.list())


HELD = 5
RECEIPTS = "mailer.receipts"


async def states(portal: Broker, database_url: str) -> dict[str, QueueState]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        found = await queue_states(portal, Workers(pool), queue_names([200, 400]))
    finally:
        await pool.close()
    return {state.queue: state for state in found}


def workers_row(env: dict[str, str], pid: int) -> str:
    shown = mailer("workers", env=env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split()[-1] == "UNACKED"
    return next(line for line in lines[1:-1] if int(line.split()[2]) == pid)


async def test_receipts_held_by_a_worker_show_as_unacked_until_they_are_sent(
    config: dict[str, Any],
    database_url: str,
    smtp_server: SmtpServer,
    portal: Broker,
    start_service: StartService,
) -> None:
    config["smtp"]["timeout"] = 60  # the relay holds DATA for as long as the test wants
    config["http"]["port"] = free_port()
    env = environment(config)
    assert (await amailer("migrate", env=env)).returncode == 0
    worker = start("worker", env=env)
    try:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
        try:
            await eventually(lambda: _alive(Workers(pool)), timeout=60)
        finally:
            await pool.close()
        # /metrics of a web-only process: what it shows comes from the worker's row.
        web = await start_service(config | {"http": config["http"] | {"port": 0}},
                                  run_worker=False, sample_interval=0.2)  # fmt: skip
        smtp_server.hold_after = 0  # DATA waits for `release`: two in DATA, three for a session
        for _ in range(HELD):
            await portal.publish(encode(receipt()), routing_key="receipt")

        async def held() -> dict[str, QueueState] | None:
            found = await states(portal, database_url)
            return found if found[RECEIPTS].unacked == HELD else None

        found = await eventually(held, timeout=30)
        receipts = found[RECEIPTS]
        assert (receipts.ready, receipts.consumers) == (0, 1)
        assert receipts.unacked_as_of is not None
        assert found["mailer.dead"].unacked == 0 and found["mailer.dead"].consumers == 1
        assert found["mailer.delay.200ms"].unacked == 0
        assert found["mailer.newsletters"].unacked == 0
        assert smtp_server.received == []  # nothing answered: all five still in hand

        async def shown(n: float) -> bool:
            return await metric(web, "mailer_queue_messages_unacked", queue=RECEIPTS) == n

        await eventually(lambda: shown(HELD), timeout=15)
        assert await metric(web, "mailer_queue_messages_unacked", queue="mailer.dead") == 0
        assert await metric(web, "mailer_queue_consumers", queue=RECEIPTS) == 1
        assert workers_row(env, worker.pid).endswith(f"  {RECEIPTS} {HELD}")

        smtp_server.release.set()

        async def all_sent() -> bool:
            return len(smtp_server.received) == HELD

        await eventually(all_sent, timeout=30)

        async def settled() -> dict[str, QueueState] | None:
            found = await states(portal, database_url)
            return found if found[RECEIPTS].unacked == 0 else None

        receipts = (await eventually(settled, timeout=15))[RECEIPTS]
        assert (receipts.ready, receipts.consumers) == (0, 1)
        await eventually(lambda: shown(0), timeout=15)
        assert workers_row(env, worker.pid).endswith("  -")
    finally:
        smtp_server.release.set()
        worker.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(worker.communicate, timeout=60)
    assert worker.returncode == 0, stderr


async def test_unacked_is_unknown_rather_than_zero_without_the_database(
    portal: Broker,
) -> None:
    await portal.declare([])
    found = await queue_states(portal, None, [RECEIPTS, "mailer.nonexistent"])
    assert [(s.queue, s.ready, s.unacked) for s in found] == [
        (RECEIPTS, 0, None),
        ("mailer.nonexistent", None, None),
    ]
