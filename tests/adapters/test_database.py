from __future__ import annotations

import asyncio

import asyncpg
import pytest

from mailer.adapters import database
from mailer.adapters.database import LATEST_VERSION, SchemaMismatch


async def applied_versions(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return [
            r["version"]
            for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        ]
    finally:
        await conn.close()


async def test_migrate_creates_the_database_and_is_idempotent(empty_database_url: str) -> None:
    first = await database.migrate(empty_database_url)
    assert [m.version for m in first] == list(range(1, LATEST_VERSION + 1))
    assert await database.migrate(empty_database_url) == []
    assert await applied_versions(empty_database_url) == list(range(1, LATEST_VERSION + 1))


async def test_concurrent_migrations_apply_each_file_once(empty_database_url: str) -> None:
    await database.migrate(empty_database_url)  # creates the database first
    conn = await asyncpg.connect(empty_database_url)
    await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    await conn.close()
    results = await asyncio.gather(*(database.migrate(empty_database_url) for _ in range(4)))
    assert sorted(len(applied) for applied in results) == [0, 0, 0, LATEST_VERSION]
    assert await applied_versions(empty_database_url) == list(range(1, LATEST_VERSION + 1))


async def test_a_newer_schema_is_refused(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'future')")
    await conn.close()
    with pytest.raises(SchemaMismatch, match="version 999, newer than this mailer knows"):
        await database.migrate(database_url)
    with pytest.raises(SchemaMismatch, match="upgrade mailer"):
        await database.open_pool(database_url, size=2)


async def test_the_worker_refuses_an_unmigrated_database(empty_database_url: str) -> None:
    with pytest.raises(SchemaMismatch, match="does not exist yet: run `mailer migrate`"):
        await database.open_pool(empty_database_url, size=2)
    conn = await asyncpg.connect(empty_database_url.rsplit("/", 1)[0] + "/postgres")
    await conn.execute(f'CREATE DATABASE "{empty_database_url.rsplit("/", 1)[1]}"')
    await conn.close()
    with pytest.raises(
        SchemaMismatch, match=r"version 0, this mailer needs .*run `mailer migrate`"
    ):
        await database.open_pool(empty_database_url, size=2)
