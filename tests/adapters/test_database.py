from __future__ import annotations

import asyncio
import contextlib
import re

import asyncpg
import pytest

from mailer.adapters import database
from mailer.adapters.database import LATEST_VERSION, SchemaMismatch
from mailer.adapters.notifications import Listener
from mailer.config import build_settings
from mailer.errors import ConfigError, TemporaryFailure
from tests.support.postgres import free_ports
from tests.support.waiting import eventually


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
    versions = [m.version for m in database.migrations()]  # numbers are handed out ahead
    assert versions[-1] == LATEST_VERSION
    assert [m.version for m in first] == versions
    assert await database.migrate(empty_database_url) == []
    assert await applied_versions(empty_database_url) == versions


async def test_concurrent_migrations_apply_each_file_once(empty_database_url: str) -> None:
    await database.migrate(empty_database_url)  # creates the database first
    conn = await asyncpg.connect(empty_database_url)
    await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    await conn.close()
    results = await asyncio.gather(*(database.migrate(empty_database_url) for _ in range(4)))
    versions = [m.version for m in database.migrations()]
    assert sorted(len(applied) for applied in results) == [0, 0, 0, len(versions)]
    assert await applied_versions(empty_database_url) == versions


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


async def _admin(database_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(database_url.rsplit("/", 1)[0] + "/postgres")


async def test_a_read_only_database_is_temporary_and_the_pool_starts_over(
    database_url: str,
) -> None:
    """Writes refused (SQLSTATE 25006) are temporary; once writes are allowed again the pool
    replaces the sessions it opened meanwhile, which would stay read-only for good."""
    name = database_url.rsplit("/", 1)[1]
    pool = await database.open_pool(database_url, size=2)
    admin = await _admin(database_url)
    insert = "INSERT INTO jobs (id, kind, digest) VALUES (gen_random_uuid(), 'receipt', '')"
    try:
        await admin.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        assert not await database.ping(pool)  # /readyz: this database takes no writes
        for _ in range(2):  # a fresh session is read-only too
            with pytest.raises(TemporaryFailure, match="ReadOnlySQLTransactionError"):
                async with database.unavailable_is_temporary("test"):
                    await pool.execute(insert)
        await admin.execute(f"ALTER DATABASE {name} RESET default_transaction_read_only")
        # No session is cut this time: the pool must let go of its read-only ones itself.
        await eventually(lambda: _written(pool, insert), timeout=0.6, interval=0.2)
        assert await database.ping(pool)
    finally:
        await admin.execute(f"ALTER DATABASE {name} RESET default_transaction_read_only")
        await admin.close()
        await pool.close()
    db = await asyncpg.connect(database_url)  # the fixture's session was cut
    assert await db.fetchval("SELECT count(*) FROM jobs") == 1
    await db.close()


async def _written(pool: asyncpg.Pool, statement: str) -> bool:
    """The statement went through; False while the database refuses it as unavailable."""
    try:
        async with database.unavailable_is_temporary("test"):
            await pool.execute(statement)
    except TemporaryFailure:
        return False
    return True


async def _error_of(conn: asyncpg.Connection, *statements: str) -> BaseException:
    try:
        async with conn.transaction():
            for statement in statements:
                await conn.execute(statement)
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        error: BaseException = exc
        return error
    raise AssertionError(f"no error from {statements}")


async def _idle_in_a_transaction(conn: asyncpg.Connection, seconds: float) -> None:
    async with conn.transaction():
        await asyncio.sleep(seconds)
        await conn.execute("SELECT 1")


async def test_only_the_class_25_states_a_failover_gives_are_temporary(
    db: asyncpg.Connection, database_url: str
) -> None:
    read_only = await _error_of(
        db, "SET TRANSACTION READ ONLY", "CREATE TABLE t (x int)"
    )  # what a standby or a read-only primary answers
    assert getattr(read_only, "sqlstate", None) == "25006"
    assert database.is_unavailable(read_only)
    failed = await _error_of(db, "SELECT 1/0")  # 22012: our mistake, never temporary
    assert not database.is_unavailable(failed)
    async with db.transaction():
        await db.execute("SAVEPOINT a")
        with contextlib.suppress(asyncpg.DivisionByZeroError):
            await db.execute("SELECT 1/0")
        with pytest.raises(asyncpg.InFailedSQLTransactionError) as in_failed:  # 25P02
            await db.execute("SELECT 1")
        await db.execute("ROLLBACK TO SAVEPOINT a")
    assert not database.is_unavailable(in_failed.value)
    too_late = await _error_of(db, "SELECT 1", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
    assert getattr(too_late, "sqlstate", None) == "25001"  # active_sql_transaction: a bug
    assert not database.is_unavailable(too_late)
    # The server ends a session idle in a transaction for too long (25P03): temporary.
    idle = await asyncpg.connect(database_url)
    await idle.execute("SET idle_in_transaction_session_timeout = '100ms'")
    try:
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)) as ended:
            await _idle_in_a_transaction(idle, 0.4)
    finally:
        idle.terminate()
    assert database.is_unavailable(ended.value), repr(ended.value)


async def test_a_multi_host_url_reaches_the_server_that_takes_writes(
    empty_database_url: str,
) -> None:
    """`[database] url` with two hosts, the first down: migrate, the pool and LISTEN all
    go to the second."""
    base, _, name = empty_database_url.rpartition("/")
    up = base.rsplit("@", 1)[1]
    (closed,) = free_ports(1)
    url = f"postgresql://postgres@127.0.0.1:{closed},{up}/{name}?target_session_attrs=read-write"
    settings = build_settings({"database": {"url": url}})
    assert settings.database.url.get_secret_value() == url
    assert await database.migrate(url)  # creates the database on the second host
    pool = await database.open_pool(url, size=2)
    try:
        assert await database.ping(pool)
    finally:
        await pool.close()
    heard: list[str] = []
    listener = Listener(url, {"mailer_test": heard.append}, on_reconnect=lambda: None)
    await listener.start()
    try:
        conn = await asyncpg.connect(empty_database_url)
        await conn.execute("NOTIFY mailer_test, 'hello'")
        await conn.close()

        async def arrived() -> bool:
            return heard == ["hello"]

        await eventually(arrived, timeout=5)
    finally:
        await listener.stop()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://h/db", "must start with postgresql://"),
        ("postgresql://h1:5432,h2:5432/db", "names several hosts: add ?target_session_attrs"),
        ("postgresql://h1:5432,h2:x/db?target_session_attrs=read-write", "invalid port 'x'"),
        ("postgresql://h1:5432/", "names no database"),
        ("postgresql://h1/db?target_session_attrs=writable", "target_session_attrs must be"),
    ],
)
def test_a_database_url_that_cannot_work_is_named_at_start(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        build_settings({"database": {"url": url}})
    assert str(caught.value).startswith("config: [database] url (MAILER_DATABASE_URL): ")
