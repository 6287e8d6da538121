"""Parking under faults, with a real worker: a database outage while jobs are parked loses
none of them; they wait in mailer.dead and are moved into the table when it is back."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from mailer.adapters.broker import Broker
from mailer.adapters.topology import DEAD_QUEUE
from tests.conftest import StartService
from tests.support.dead_letters import parked
from tests.support.jobs import encode, receipt
from tests.support.outage import database_away
from tests.support.smtp import SmtpServer
from tests.support.vhosts import rabbitmqctl
from tests.support.waiting import eventually

JOBS = 10
RECOVERY_SECONDS = 15.0  # the mover tries again at most every 5 s


async def messages(broker_url: str) -> dict[str, int]:
    """Messages per queue, ready and unacknowledged alike, as RabbitMQ counts them (in a
    thread: rabbitmqctl takes a second, and the worker shares this event loop)."""
    vhost = urlsplit(broker_url).path.lstrip("/")
    out = await asyncio.to_thread(
        rabbitmqctl, "list_queues", "-p", vhost, "name", "messages", "--formatter", "json"
    )
    return {q["name"]: q["messages"] for q in json.loads(out)}


async def test_a_database_outage_while_parking_loses_nothing(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    database_url: str,
    broker_url: str,
) -> None:
    """Fault: the database refuses connections, and has lost those it had, while 10 jobs
    that can never succeed arrive. Figures: parked 10 of 10, lost 0, duplicated 0; none
    left in mailer.receipts meanwhile (each waits in mailer.dead); all in the table within
    RECOVERY_SECONDS of the database's return (measured, printed)."""
    await start_service(config)
    bodies = [encode(receipt(template=f"nope{n}")) for n in range(JOBS)]
    async with database_away(database_url):
        for body in bodies:
            await portal.publish(body, routing_key="receipt")

        async def all_in_mailer_dead() -> dict[str, int] | None:
            found = await messages(broker_url)
            return found if found[DEAD_QUEUE] == JOBS and found["mailer.receipts"] == 0 else None

        await eventually(all_in_mailer_dead, timeout=30)
    back = time.monotonic()
    conn = await asyncpg.connect(database_url)
    try:
        jobs = await parked(conn, JOBS, timeout=RECOVERY_SECONDS + 5)
        recovered = time.monotonic() - back
        assert len(jobs) == JOBS, "duplicated"
        assert sorted(job.body for job in jobs) == sorted(bodies)  # byte for byte
        for job in jobs:
            template = json.loads(job.body)["template"]
            assert job.reason == f"template: unknown template '{template}'"
            assert job.origin == "mailer.receipts"
            assert job.deliveries == 1
    finally:
        await conn.close()

    async def moved() -> bool:
        return (await messages(broker_url))[DEAD_QUEUE] == 0

    await eventually(moved)
    assert smtp_server.received == []
    assert recovered < RECOVERY_SECONDS, f"lost 0; all in the table {recovered:.1f}s after"
    print(
        f"\ndatabase away while parking: parked {JOBS}, lost 0; in the table {recovered:.1f}s after"
    )
