"""What reading an issue's progress costs, as `mailer issue status`, the console and the
metrics sampler (every 10 s, per process serving /metrics) do it.

    .venv/bin/python -m bench.progress [RECIPIENTS ...]

Makes a scratch database, and in it one issue per size given (default 10,000 and 100,000
recipients; 60% sent over the last hour, the rest pending), then times `Issues.progress`
(one pass over the issue's ledger rows), `Issues.newest` (the `issue list` page of 20) and
`Workers.list`. The database is dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial

import asyncpg

from bench.table import print_table
from mailer.adapters import database
from mailer.adapters.issues import Issues
from mailer.adapters.workers import Workers

ADMIN = os.environ.get("MAILER_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
NAME = f"mailer_bench_progress_{os.getpid()}"


async def timed(call: Callable[[], Awaitable[object]], rounds: int = 10) -> float:
    await call()
    started = time.perf_counter()
    for _ in range(rounds):
        await call()
    return (time.perf_counter() - started) / rounds


async def make_issue(pool: asyncpg.Pool, recipients: int) -> uuid.UUID:
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
            "   CASE WHEN n % 10 < 6 THEN 'sent' ELSE 'pending' END,"
            "   now() - (n % 3600) * interval '1 second'"
            " FROM generate_series(1, $2) AS n",
            issue_id,
            recipients,
        )
        await conn.execute("ANALYZE deliveries")
    return issue_id


async def main(sizes: list[int]) -> None:
    base = ADMIN.rsplit("/", 1)[0]
    await database.migrate(f"{base}/{NAME}")
    pool = await asyncpg.create_pool(f"{base}/{NAME}", min_size=1, max_size=2)
    rows = []
    try:
        issues, workers = Issues(pool), Workers(pool)
        for size in sizes:
            issue_id = await make_issue(pool, size)
            progress = await timed(partial(issues.progress, issue_id))
            newest = await timed(lambda: issues.newest(limit=20))
            listed = await timed(workers.list)
            rows.append(
                (
                    f"{size:,}",
                    f"{progress * 1000:.1f}",
                    f"{newest * 1000:.1f}",
                    f"{listed * 1000:.2f}",
                )
            )
    finally:
        await pool.close()
        admin = await asyncpg.connect(ADMIN)
        await admin.execute(f"DROP DATABASE IF EXISTS {NAME} WITH (FORCE)")
        await admin.close()
    print_table(
        "Reading progress (ms per call; issues accumulate: the list covers all made so far)",
        ("recipients of the issue", "Issues.progress", "Issues.newest(20)", "Workers.list"),
        rows,
    )


if __name__ == "__main__":
    asyncio.run(main([int(a) for a in sys.argv[1:]] or [10_000, 100_000]))
