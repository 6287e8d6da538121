"""What reading an issue's progress costs, as `mailer issue status`, the console and the
metrics sampler (every 10 s, per process serving /metrics) do it.

    .venv/bin/python -m bench.progress [RECIPIENTS ...]

Makes a scratch database, and in it three issues per size given (default 10,000 and 100,000
recipients): one sending (60% sent over the last hour, the rest pending), one alike whose
last send was two hours ago (stalled), and one done as long ago (its final counts and newest
send stored by `issues_done`, as when its last outcome is recorded). Then times
`Issues.progress` (what `issue status` and the console's issue page read) of the one sending
(its count and rate facts) and of the one done (its row alone), `Issues.facts` (the rate and
newest send) of the sending and the stalled one, the done one's newest send read from its
rows as the console did before migration 0014 (once a day per issue), `Issues.newest` (the
`issue list` page of 20: active issues counted live, finished ones read from their row), the
finished issues listed with their counts stored and, side by side, counted live as before
migration 0007, and `Workers.list`.

Then, at the middle size, whether an index on deliveries (job_id, status) is worth having:
the live count of an issue sending without and with it, and the cost of the writes every
send makes (a status change of 500 rows at a time, as `record_deliveries` does).
The database is dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial

import asyncpg

from bench.table import print_table
from mailer.adapters import database
from mailer.adapters.issues import _FACTS, _NEWEST, Issues
from mailer.adapters.workers import Workers
from mailer.core.progress import RATE_WINDOW

ADMIN = os.environ.get("MAILER_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
NAME = f"mailer_bench_progress_{os.getpid()}"


async def timed(call: Callable[[], Awaitable[object]], rounds: int = 10) -> float:
    await call()
    started = time.perf_counter()
    for _ in range(rounds):
        await call()
    return (time.perf_counter() - started) / rounds


async def make_issue(
    pool: asyncpg.Pool, recipients: int, *, done: bool, quiet_for: timedelta = timedelta(0)
) -> uuid.UUID:
    issue_id = uuid.uuid4()
    async with pool.acquire() as conn:
        list_id = await conn.fetchval(
            "INSERT INTO lists (slug) VALUES ('bench') ON CONFLICT (slug) DO UPDATE"
            " SET slug = excluded.slug RETURNING id"
        )
        await conn.execute(
            "INSERT INTO jobs (id, kind, digest) VALUES ($1, 'newsletter', '\\x00')", issue_id
        )
        await conn.execute(
            "INSERT INTO issues (id, list_id, payload, state, send_at, total, started_at)"
            " VALUES ($1, $2, '{\"subject\": \"Bench\"}', 'sending', now(), $3,"
            " now() - interval '1 hour')",
            issue_id,
            list_id,
            recipients,
        )
        await conn.execute(
            "INSERT INTO deliveries (job_id, recipient_key, status, updated_at)"
            " SELECT $1::uuid, decode(md5($1::uuid::text || n::text), 'hex'),"
            "   CASE WHEN n % 10 < 6 OR $3 THEN 'sent' ELSE 'pending' END,"
            "   now() - $4::interval - (n % 3600) * interval '1 second'"
            " FROM generate_series(1, $2) AS n",
            issue_id,
            recipients,
            done,
            quiet_for,
        )
        if done:
            assert await conn.fetchval("SELECT issues_done($1)", [issue_id]) == issue_id
        await conn.execute("VACUUM ANALYZE deliveries")
    return issue_id


async def finished_listing(pool: asyncpg.Pool, issues: Issues) -> tuple[float, float]:
    """Listing the issues done: with their stored counts, then counted live (as before)."""
    stored = await timed(lambda: issues.newest(limit=20, states=["done"]))
    async with pool.acquire() as conn:
        unstored = conn.transaction()
        await unstored.start()
        try:
            await conn.execute("UPDATE issues SET final_counts = NULL WHERE state = 'done'")
            live = await timed(lambda: conn.fetch(_NEWEST, 20, ["done"]), rounds=5)
        finally:
            await unstored.rollback()  # the stored counts back
    return stored, live


_COUNT = "SELECT status, count(*) FROM deliveries WHERE job_id = $1 GROUP BY status"


async def index_cost(pool: asyncpg.Pool, recipients: int) -> list[tuple[str, str, str]]:
    """A live count and the writes of sending, without and with (job_id, status)."""
    rows = []
    for indexed in (False, True):
        async with pool.acquire() as conn:
            if indexed:
                await conn.execute("CREATE INDEX bench_by_status ON deliveries (job_id, status)")
            issue_id = await make_issue(pool, recipients, done=False)
            count = await timed(partial(conn.fetch, _COUNT, issue_id))
            ids = [
                r["id"]
                for r in await conn.fetch(
                    "SELECT id FROM deliveries WHERE job_id = $1 AND status = 'pending'",
                    issue_id,
                )
            ]
            started = time.perf_counter()
            for at in range(0, len(ids), 500):
                await conn.execute(
                    "UPDATE deliveries SET status = 'sent', updated_at = now() WHERE id = ANY($1)",
                    ids[at : at + 500],
                )
            per_row = (time.perf_counter() - started) / len(ids)
            after = await timed(partial(conn.fetch, _COUNT, issue_id))
            if indexed:
                await conn.execute("DROP INDEX bench_by_status")
        rows.append(
            (
                "with (job_id, status)" if indexed else "without (as shipped)",
                f"{count * 1000:.1f} / {after * 1000:.1f}",
                f"{per_row * 1e6:.1f}",
            )
        )
    return rows


async def main(sizes: list[int]) -> None:
    base = ADMIN.rsplit("/", 1)[0]
    await database.migrate(f"{base}/{NAME}")
    pool = await asyncpg.create_pool(f"{base}/{NAME}", min_size=1, max_size=2)
    rows = []
    try:
        issues, workers = Issues(pool), Workers(pool)
        for size in sizes:
            stalled_id = await make_issue(pool, size, done=False, quiet_for=timedelta(hours=2))
            issue_id = await make_issue(pool, size, done=False)
            done_id = await make_issue(pool, size, done=True, quiet_for=timedelta(hours=2))
            progress = await timed(partial(issues.progress, issue_id))
            progress_done = await timed(partial(issues.progress, done_id))
            facts = []
            for shown in (issue_id, stalled_id):
                summary = await issues.summary(shown)
                assert summary is not None
                facts.append(await timed(partial(issues.facts, summary)))
            done_rows = await timed(partial(pool.fetchrow, _FACTS, done_id, RATE_WINDOW, False))
            newest = await timed(lambda: issues.newest(limit=20))
            stored, live = await finished_listing(pool, issues)
            listed = await timed(workers.list)
            rows.append(
                (
                    f"{size:,}",
                    f"{progress * 1000:.1f}",
                    f"{progress_done * 1000:.2f}",
                    f"{facts[0] * 1000:.2f}",
                    f"{facts[1] * 1000:.2f}",
                    f"{done_rows * 1000:.2f}",
                    f"{newest * 1000:.1f}",
                    f"{live * 1000:.1f}",
                    f"{stored * 1000:.2f}",
                    f"{live / stored:,.0f}x",
                    f"{listed * 1000:.2f}",
                )
            )
        middle = sorted(sizes)[len(sizes) // 2]
        indexed = await index_cost(pool, middle)
    finally:
        await pool.close()
        admin = await asyncpg.connect(ADMIN)
        await admin.execute(f"DROP DATABASE IF EXISTS {NAME} WITH (FORCE)")
        await admin.close()
    print_table(
        "Reading progress (ms per call; issues accumulate: a list covers all made so far,"
        " per size one sending, one whose last send was 2 h ago and one done)",
        (
            "recipients of each issue",
            "Issues.progress, sending",
            "Issues.progress, done",
            "Issues.facts, sending",
            "Issues.facts, stalled 2 h",
            "done: newest send from its rows (before 0014)",
            "Issues.newest(20)",
            "done listed, counted live",
            "done listed, stored",
            "ratio",
            "Workers.list",
        ),
        rows,
    )
    print_table(
        f"An index on deliveries (job_id, status)? One issue sending, {middle:,} recipients",
        (
            "deliveries indexes",
            "live count ms (vacuumed / after 40% sent)",
            "status write µs per row",
        ),
        indexed,
    )


if __name__ == "__main__":
    asyncio.run(main([int(a) for a in sys.argv[1:]] or [10_000, 100_000]))
