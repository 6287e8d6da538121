"""The one owner of delivery rows, against the real PostgreSQL: claims, leases, late writes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from mailer.adapters.deliveries import Deliveries
from mailer.core.deliveries import DeliveryStatus, Write


async def issue_rows(db: asyncpg.Connection, count: int) -> uuid.UUID:
    job = uuid.uuid4()
    await db.execute("INSERT INTO jobs (id, kind, digest) VALUES ($1, 'newsletter', '\\x00')", job)
    await db.execute(
        "INSERT INTO deliveries (job_id, recipient_key)"
        " SELECT $1, int4send(n) FROM generate_series(1, $2) AS n",
        job,
        count,
    )
    return job


async def statuses(db: asyncpg.Connection, job: uuid.UUID) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT status, count(*) AS n FROM deliveries WHERE job_id = $1 GROUP BY status", job
    )
    return {r["status"]: r["n"] for r in rows}


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


def sent(delivery_id: int) -> Write:
    return Write(delivery_id, DeliveryStatus.SENT, True, "250 ok", "<m@x>")


async def test_a_late_sent_wins_over_a_hand_back_but_not_over_a_new_claim(
    db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """Worker A is cut off past its lease; B takes the rows back. A's late 250s are kept
    for rows B has not claimed again (no second copy needed); rows B claimed are B's."""
    a = Deliveries(pool, worker_id=uuid.uuid4(), lease=0.2)
    b = Deliveries(pool, worker_id=uuid.uuid4(), lease=30)
    job = await issue_rows(db, 4)
    claimed = [row.id for row in await a.claim_chunk(job, 1, 4)]
    assert len(claimed) == 4
    await asyncio.sleep(0.3)  # A's lease lapses
    assert await b.reclaim_expired([job]) == 4
    assert await a.reclaim_expired([job]) == 0  # nobody else's left
    retaken = [row.id for row in await b.claim_chunk(job, 1, 2)]
    recorded = await a.record([sent(i) for i in claimed])
    assert recorded.ids == set(claimed) - set(retaken)
    assert await statuses(db, job) == {"sent": 2, "sending": 2}
    assert (await b.record([sent(i) for i in retaken])).ids == set(retaken)
    assert await statuses(db, job) == {"sent": 4}
    attempts = await db.fetchval("SELECT sum(attempts) FROM deliveries WHERE job_id = $1", job)
    assert attempts == 4


async def test_a_guess_never_overrides_a_row_it_does_not_hold(
    db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    a = Deliveries(pool, worker_id=uuid.uuid4(), lease=30)
    job = await issue_rows(db, 2)
    rows = await a.claim_chunk(job, 1, 2)
    assert await a.hand_back([rows[0].id]) == 1
    unattempted = Write(rows[0].id, DeliveryStatus.SUPPRESSED, detail="unsubscribed")
    assert (await a.record([unattempted])).ids == set()
    assert await statuses(db, job) == {"pending": 1, "sending": 1}


async def test_shutdown_keeps_the_claims_of_outcomes_not_yet_written(
    db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    a = Deliveries(pool, worker_id=uuid.uuid4(), lease=30)
    job = await issue_rows(db, 3)
    rows = await a.claim_chunk(job, 1, 3)
    assert await a.release_unattempted(keep=[rows[0].id]) == 2
    assert await statuses(db, job) == {"pending": 2, "sending": 1}
    assert await a.renew_leases() == 1


async def test_a_retry_waits_for_its_time(db: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    a = Deliveries(pool, worker_id=uuid.uuid4(), lease=30)
    job = await issue_rows(db, 1)
    (row,) = await a.claim_chunk(job, 1, 1)
    later = Write(
        row.id,
        DeliveryStatus.RETRYING,
        True,
        "451 later",
        not_before=datetime(2999, 1, 1, tzinfo=UTC),
    )
    assert (await a.record([later])).ids == {row.id}
    assert await a.claim_chunk(job, 1, 1) == []


async def test_a_value_the_database_refuses_holds_up_no_other_outcome(
    db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """PostgreSQL refuses NUL in text: that write loses its reply, the rest go in whole."""
    a = Deliveries(pool, worker_id=uuid.uuid4(), lease=30)
    job = await issue_rows(db, 3)
    rows = await a.claim_chunk(job, 1, 3)
    writes = [sent(row.id) for row in rows]
    writes[1] = Write(rows[1].id, DeliveryStatus.FAILED, True, "550 bad\x00byte")
    assert (await a.record(writes)).ids == {row.id for row in rows}
    replies = await db.fetch(
        "SELECT status, reply FROM deliveries WHERE job_id = $1 ORDER BY id", job
    )
    assert [tuple(r) for r in replies] == [
        ("sent", "250 ok"),
        ("failed", "(the relay's reply could not be stored)"),
        ("sent", "250 ok"),
    ]
