"""A PostgreSQL failover mid-issue: the primary dies, the standby is promoted, the worker goes on.

The worker is given the libpq multi-host URL of a private primary and its synchronous
standby (tests/support/postgres.py); nothing of the machine's own PostgreSQL is touched.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from mailer.adapters import database
from mailer.adapters.broker import Broker
from mailer.adapters.notifications import Listener
from mailer.parts.worker import DISPATCH_LOOPS
from mailer.worker.recording import RECORD_WINDOW
from tests.conftest import StartService
from tests.support.dead_letters import nothing_parked as support_nothing_parked
from tests.support.jobs import encode, receipt
from tests.support.newsletters import issue, outcomes, people, subscribe, until_state
from tests.support.postgres import PostgresPair, make_pair
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually


async def nothing_parked(portal: Broker, database_url: str) -> bool:
    """No job parked in the table, and none on its way there in mailer.dead."""
    conn = await asyncpg.connect(database_url)
    try:
        return await support_nothing_parked(conn, portal)
    finally:
        await conn.close()


# A worker that died would repeat at most the unrecorded window of each chunk in hand.
DUPLICATE_BOUND = RECORD_WINDOW * DISPATCH_LOOPS


@pytest.fixture(scope="module")
def pg_pair() -> Iterator[PostgresPair]:
    """One primary + standby for the module: initdb and pg_basebackup take seconds."""
    pair = make_pair()
    yield pair
    pair.close()


async def test_every_part_reaches_the_primary_whichever_host_is_named_first(
    pg_pair: PostgresPair,
) -> None:
    await pg_pair.wait_streaming()
    url = pg_pair.url("mailer_order", standby_first=True)
    assert await database.migrate(url)  # creates the database, on the primary
    pool = await database.open_pool(url, size=2)
    try:
        assert await pool.fetchval("SELECT inet_server_port()") == pg_pair.primary_port
        assert await database.ping(pool)
    finally:
        await pool.close()
    heard: list[str] = []
    listener = Listener(url, {"mailer_test": heard.append}, on_reconnect=lambda: None)
    await listener.start()
    try:
        primary = await asyncpg.connect(pg_pair.single_url(pg_pair.primary_port, "mailer_order"))
        await primary.execute("NOTIFY mailer_test, 'on the primary'")
        await primary.close()

        async def arrived() -> bool:
            return heard == ["on the primary"]

        await eventually(arrived, timeout=5)
    finally:
        await listener.stop()


async def test_an_issue_survives_a_failover_with_nobody_missing(
    pg_pair: PostgresPair,
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
) -> None:
    """Fault: mid-issue the primary is fenced read-only (SQLSTATE 25006 to every session)
    for 2 s, then stops (`pg_ctl -m immediate`); a second later the standby is promoted,
    as Patroni would. Receipts are published while it is fenced.
    Figures: 400 subscribers and 5 receipts, lost 0; duplicates at most the documented
    bound (a 250 received but not yet committed when the primary died may be sent again:
    64 per chunk in hand, 2 chunks); time to recover (primary down to the first outcome
    written on the new primary): measured, printed."""
    await pg_pair.wait_streaming()
    url = pg_pair.url("mailer_issue")
    await database.migrate(url)
    audience = people(400)
    await subscribe(url, audience)
    smtp_server.data_delay = 0.03  # with 4 connections, at least 3 s for everyone
    config["database"] = {"url": url, "pool_size": 4}
    config["newsletter"] = {"chunk_size": 40, "pool_size": 4}
    await start_service(config)
    job = issue()
    await portal.publish(encode(job), routing_key="newsletter")

    async def under_way() -> bool:
        return len(smtp_server.received) >= 60

    await eventually(under_way, timeout=30)
    await pg_pair.fence_primary()
    at_failure = len(smtp_server.received)
    receipts = [receipt(to={"email": f"buyer{n}@example.pl"}) for n in range(5)]
    for late in receipts:
        await portal.publish(encode(late), routing_key="receipt")
    await asyncio.sleep(2)  # longer than the 5 rounds of 0.2 s that park a failing job
    down = time.monotonic()
    pg_pair.stop_primary()
    await asyncio.sleep(1)
    pg_pair.promote()
    promoted = time.monotonic()
    new = await asyncpg.connect(pg_pair.single_url(pg_pair.standby_port, "mailer_issue"))
    try:
        mark = await new.fetchval("SELECT now()")

        async def writing_again() -> bool:
            written = await new.fetchval(
                "SELECT count(*) FROM deliveries WHERE job_id = $1 AND updated_at > $2",
                uuid.UUID(job["id"]),
                mark,
            )
            return bool(written)

        await eventually(writing_again, timeout=30)
        recovered = time.monotonic() - down
        await until_state(new, job["id"], "done", timeout=90)
        assert await outcomes(new, job["id"]) == {"sent": 400}

        async def listening_again() -> bool:
            found = await new.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%'"
            )
            return bool(found)

        await eventually(listening_again, timeout=10)
    finally:
        await new.close()

    async def receipts_delivered() -> bool:
        return len(smtp_server.received) >= len(audience) + len(receipts)

    await eventually(receipts_delivered, timeout=30)
    counts = Counter(r.rcpt_tos[0] for r in smtp_server.received)
    expected = [email for email, _, _ in audience] + [r["to"]["email"] for r in receipts]
    missing = [email for email in expected if not counts[email]]
    duplicates = sum(n - 1 for n in counts.values())
    figures = (
        f"fenced at {at_failure}/400 sent: missing {len(missing)}, duplicates {duplicates}"
        f" (bound {DUPLICATE_BOUND}), promoted {promoted - down:.1f} s after the primary"
        f" stopped, writing again {recovered:.1f} s after"
    )
    print("\n" + figures)
    assert at_failure < 400, "the issue was over before the failover"
    assert await nothing_parked(portal, url), figures
    assert missing == [], figures
    assert duplicates <= DUPLICATE_BOUND, figures
    assert set(counts) == set(expected), figures
