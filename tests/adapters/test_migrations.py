"""Migrations carry checksums; SQL functions are re-applied from their repeatable files."""

from __future__ import annotations

import asyncpg
import pytest

from mailer.adapters import database
from mailer.adapters.database import SchemaMismatch


async def test_an_edited_migration_is_refused_not_reported_up_to_date(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        # As if 0002 had been edited after this database applied it.
        await conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 2")
    finally:
        await conn.close()
    with pytest.raises(SchemaMismatch, match=r"0002_newsletters was applied .* edited since"):
        await database.migrate(database_url)


async def test_a_database_from_before_checksums_gets_them_once(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("ALTER TABLE schema_migrations DROP COLUMN checksum")
        assert await database.migrate(database_url) == []
        stored = dict(await conn.fetch("SELECT version, checksum FROM schema_migrations"))
    finally:
        await conn.close()
    assert stored == {m.version: m.checksum for m in database.migrations()}


async def test_functions_are_reapplied_on_every_migrate(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DROP FUNCTION record_deliveries")
        await database.migrate(database_url)
        found = await conn.fetchval(
            "SELECT count(*) FROM pg_proc WHERE proname IN ('record_deliveries', 'claim_receipt',"
            " 'take_throttle', 'throttle_release', 'issues_done')"
        )
        superseded = await conn.fetchval(
            "SELECT count(*) FROM pg_proc WHERE proname IN ('record_delivery', 'finish_chunk')"
        )
    finally:
        await conn.close()
    assert (found, superseded) == (5, 0)


async def test_a_migration_numbered_below_the_newest_applied_is_still_applied(
    database_url: str,
) -> None:
    """A database that got 0007 from code that lacked 0006 (work merged from a branch
    numbered earlier): the service refuses it, naming 0006, and `migrate` applies 0006."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DROP TABLE workers; DELETE FROM schema_migrations WHERE version = 6")
        with pytest.raises(SchemaMismatch, match=r"\(not applied: 0006\): run `mailer migrate`"):
            await database.open_pool(database_url, size=1)
        applied = await database.migrate(database_url)
        assert await conn.fetchval("SELECT to_regclass('workers') IS NOT NULL")
    finally:
        await conn.close()
    assert [m.version for m in applied] == [6]
    pool = await database.open_pool(database_url, size=1)
    await pool.close()
