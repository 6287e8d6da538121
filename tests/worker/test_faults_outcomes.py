"""A message the relay accepted is recorded sent, whatever the database does meanwhile.

The outage begins between the relay storing the receipt and its 250 reaching the worker,
and lasts longer than the ledger's own short retries of the write (about 3 s).
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from mailer.adapters.broker import Broker
from tests.conftest import StartService
from tests.support.copies import figures
from tests.support.deadlines import reached
from tests.support.jobs import encode, receipt
from tests.support.smtp import Received, SmtpServer

ADDRESS = "jan.kowalski@example.pl"
OUTAGE = 4.0  # seconds: past the ledger's retries, and past the 3 s lease of the tests


async def status(database_url: str, job_id: str) -> str | None:
    conn = await asyncpg.connect(database_url)
    try:
        found: str | None = await conn.fetchval(
            "SELECT status FROM deliveries WHERE job_id = $1", UUID(job_id)
        )
        return found
    finally:
        await conn.close()


@pytest.mark.parametrize("lease", [3, 10], ids=["outage-past-the-lease", "outage-within-the-lease"])
async def test_a_receipt_accepted_during_a_database_outage_is_recorded_sent_once(
    lease: float,
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    database_url: str,
) -> None:
    """The database goes away right after the relay's 250, for longer than the lease or
    within it, and the worker restarts: the receipt is 'sent' within seconds of the outage
    ending and its recipient has 1 copy, also across the restart (a redelivered job does not
    retake the claim and send again, and the restart does not hand it back unattempted)."""
    config["worker"]["lease"] = lease
    base, _, name = database_url.rpartition("/")
    admin = await asyncpg.connect(base + "/postgres")
    outage_over = asyncio.Event()

    async def end_outage() -> None:
        await asyncio.sleep(OUTAGE)
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        outage_over.set()

    async def cut_database(message: Received) -> None:
        smtp_server.before_reply = None  # the first message only
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        asyncio.get_running_loop().create_task(end_outage())

    smtp_server.before_reply = cut_database
    try:
        first = await start_service(config)
        job = receipt()
        await portal.publish(encode(job), routing_key="receipt")
        await asyncio.wait_for(outage_over.wait(), timeout=15)

        async def sent() -> bool:
            return await status(database_url, job["id"]) == "sent"

        recorded = await reached(sent, timeout=10)
        before_restart = await status(database_url, job["id"])
        await first.stop()
        await start_service(config)
        await reached(sent, timeout=8)
    finally:
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        await admin.close()
    summary = (
        f"recorded sent within 10 s of the outage: {recorded} (was {before_restart!r});"
        f" after a restart: {figures(smtp_server.received, [ADDRESS])},"
        f" ledger {await status(database_url, job['id'])!r}"
    )
    assert recorded, summary
    assert len(smtp_server.to(ADDRESS)) == 1, summary
    assert await status(database_url, job["id"]) == "sent", summary
