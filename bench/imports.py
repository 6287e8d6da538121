"""A subscriber import of 100,000 rows (5% repeating an earlier address), before and after
duplicates were counted across the whole file.

    .venv/bin/python -m bench.imports [--rows 100000]

"Before" is the import as it was: each batch of 10,000 in a transaction of its own, the
duplicates inside a batch dropped by DISTINCT ON and not counted, those across batches
counted as "already subscribed". "After" is `Subscribers.importing`: one connection, the
addresses seen so far in a temporary table, every duplicate counted once. Both load the same
rows into an empty list, alternately, three times; rows are built beforehand, so the time is the
database's. Needs PostgreSQL as the tests do.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from bench.table import print_table
from mailer.adapters import database
from mailer.adapters.subscribers import Subscribers
from mailer.core.audience import ImportedPerson, imported_person
from mailer.core.tokens import derive_key

ADMIN_DSN = os.environ.get(
    "MAILER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
DSN = ADMIN_DSN.rsplit("/", 1)[0] + "/mailer_bench_imports"
BATCH = 10_000

_BEFORE_SQL = """
WITH fresh AS (
    SELECT DISTINCT ON (st.address_key) st.*
    FROM staged st
    WHERE NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.address_key = st.address_key)
), people AS (
    INSERT INTO subscribers (address_key, email, name, locale)
    SELECT address_key, email, name, locale FROM fresh
    ON CONFLICT (address_key) DO UPDATE
        SET name = coalesce(subscribers.name, excluded.name),
            locale = coalesce(subscribers.locale, excluded.locale)
    RETURNING id
), joined AS (
    INSERT INTO subscriptions (list_id, subscriber_id, status, source)
    SELECT $1, id, 'subscribed', 'import' FROM people
    ON CONFLICT (list_id, subscriber_id) DO UPDATE SET status = 'subscribed', source = 'import',
        changed_at = now()
        WHERE subscriptions.status = 'pending'
    RETURNING subscriber_id
)
SELECT
    (SELECT count(*) FROM joined)::int AS added,
    (SELECT count(*) FROM people p JOIN subscriptions s ON s.subscriber_id = p.id
       AND s.list_id = $1 AND s.status = 'subscribed'
       WHERE p.id NOT IN (SELECT subscriber_id FROM joined))::int AS already,
    (SELECT count(*) FROM people p JOIN subscriptions s ON s.subscriber_id = p.id
       AND s.list_id = $1 AND s.status = 'unsubscribed')::int AS unsubscribed,
    (SELECT count(DISTINCT address_key) FROM staged st
       WHERE EXISTS (SELECT 1 FROM suppressions x WHERE x.address_key = st.address_key))::int
       AS suppressed
"""


async def before(pool: asyncpg.Pool, list_id: int, rows: Sequence[ImportedPerson]) -> None:
    for start in range(0, len(rows), BATCH):
        records = [(r.address_key, r.email, r.name, r.locale) for r in rows[start : start + BATCH]]
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "CREATE TEMPORARY TABLE staged (address_key bytea, email text, name text,"
                " locale text) ON COMMIT DROP"
            )
            await conn.copy_records_to_table(
                "staged", records=records, columns=["address_key", "email", "name", "locale"]
            )
            await conn.fetchrow(_BEFORE_SQL, list_id)


async def after(pool: asyncpg.Pool, list_id: int, rows: Sequence[ImportedPerson]) -> None:
    async with Subscribers(pool).importing(list_id) as importer:
        for start in range(0, len(rows), BATCH):
            await importer.add(rows[start : start + BATCH])


def people(count: int) -> list[ImportedPerson]:
    key = derive_key(b"bench-secret-key-that-is-long-enough-0123456789", "address")
    found = []
    for n in range(count):
        index = n - 1000 if n % 20 == 19 else n  # every 20th repeats one a batch or so back
        found.append(
            imported_person(
                [f"p{index}@example{index % 50}.pl", f"Osoba {index}", "pl"], hash_key=key
            )
        )
    return found


async def main(count: int) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute("DROP DATABASE IF EXISTS mailer_bench_imports WITH (FORCE)")
    await admin.close()
    await database.migrate(DSN)
    pool = await asyncpg.create_pool(DSN, min_size=1, max_size=2)
    list_id = (await Subscribers(pool).list_ids(["lucid-news"]))["lucid-news"]
    rows = people(count)
    runs: dict[str, list[float]] = {"before": [], "after": []}
    variants: dict[str, Callable[[asyncpg.Pool, int, Sequence[ImportedPerson]], Awaitable[None]]]
    variants = {"before": before, "after": after}
    for _ in range(3):
        for name, variant in variants.items():
            await pool.execute("TRUNCATE subscribers CASCADE")
            started = time.perf_counter()
            await variant(pool, list_id, rows)
            runs[name].append(time.perf_counter() - started)
    await pool.close()
    base = min(runs["before"])
    print_table(
        f"subscribers import, {count:,} rows (5% duplicates), batches of {BATCH:,}",
        ["import", "best s", "runs s", "rows/s", "vs before"],
        [
            [
                name,
                f"{min(t):.2f}",
                " ".join(f"{x:.2f}" for x in t),
                f"{count / min(t):,.0f}",
                f"{min(t) / base:.2f}x",
            ]
            for name, t in runs.items()
        ],
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    asyncio.run(main(parser.parse_args().rows))
