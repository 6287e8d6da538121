"""The overview chart's counts, read whole once and then two minutes at a time: the same
numbers as reading the whole hour again, but for rows recorded again later."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg

from mailer.adapters.ledger_views import LedgerViews, MinuteCount
from mailer.web.console.minutes import MinuteCounts


async def add(db: asyncpg.Connection, job_id: uuid.UUID, status: str, ago: str, n: int) -> None:
    await db.execute(
        "INSERT INTO deliveries (job_id, recipient_key, status, updated_at)"
        " SELECT $1, decode(md5(random()::text || g::text), 'hex'), $2,"
        " now() - $3::interval FROM generate_series(1, $4) g",
        job_id,
        status,
        timedelta(seconds=int(ago)),
        n,
    )


def totals(counts: list[MinuteCount]) -> dict[tuple[str, str], int]:
    found: dict[tuple[str, str], int] = {}
    for c in counts:
        found[c.kind, c.status] = found.get((c.kind, c.status), 0) + c.count
    return found


async def test_the_chart_reads_the_hour_once_then_only_the_last_minutes(
    db: asyncpg.Connection, database_url: str
) -> None:
    receipts, issue = uuid.uuid4(), uuid.uuid4()
    await db.execute(
        "INSERT INTO jobs (id, kind, digest) VALUES ($1, 'receipt', 'x'), ($2, 'newsletter', 'y')",
        receipts,
        issue,
    )
    await add(db, issue, "sent", "3000", 40)  # 50 min ago
    await add(db, issue, "sent", "4000", 7)  # 67 min ago: outside the hour
    await add(db, receipts, "failed", "600", 3)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        views = LedgerViews(pool)
        chart = MinuteCounts(views)
        _, first = await chart.read()
        assert totals(first) == {("newsletter", "sent"): 40, ("receipt", "failed"): 3}

        await add(db, issue, "sent", "0", 25)  # recorded since
        await add(db, receipts, "sent", "0", 2)
        at, second = await chart.read()
        expected = {
            ("newsletter", "sent"): 65,
            ("receipt", "failed"): 3,
            ("receipt", "sent"): 2,
        }
        assert totals(second) == expected
        assert totals(await views.sends_per_minute(60)) == expected  # as a whole read says
        assert max(c.minute for c in second) == at.replace(second=0, microsecond=0)
        # A row recorded again (a sent one bounced) is counted in its new minute too.
        await db.execute(
            "UPDATE deliveries SET status = 'bounced', updated_at = now() WHERE id ="
            " (SELECT min(id) FROM deliveries WHERE job_id = $1)",
            issue,
        )
        _, third = await chart.read()
        assert totals(third)[("newsletter", "bounced")] == 1
        assert totals(third)[("newsletter", "sent")] == 65
    finally:
        await pool.close()
