"""PostgreSQL through asyncpg: the connection pool and schema migrations.

Numbered SQL files in `migrations/` are applied in order, each in its own transaction, under
an advisory lock so that two `mailer migrate` runs never interleave. A database whose schema
is newer than this code is refused rather than written to, and so is one where a migration
already applied has since been edited (each carries its SHA-256). The SQL functions live in
the repeatable files of `sql/`, applied again by every run, after the numbered ones.

Failover: the URL may name several servers (`postgresql://u@h1:p1,h2:p2/db?
target_session_attrs=read-write`); new connections then go to the one that takes writes. A
server that has turned read-only is temporary, like one that is down, and the pool's
connections are all replaced once one of them meets it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from mailer.config import parse_database_url
from mailer.errors import ConfigError, MailerError, TemporaryFailure

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

log = logging.getLogger(__name__)
T = TypeVar("T")
Row = TypeVar("Row", bound="DataclassInstance")

MIGRATION_LOCK = 0x6D61696C6572  # "mailer"
_MIGRATION_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
# Errors that say "the database cannot serve us right now", not "the query is wrong".
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a pooled connection killed mid-operation
    asyncpg.PostgresConnectionError,
)
# SQLSTATE classes of the same kind: connection exception, transaction rollback
# (serialization, deadlock), insufficient resources, object not in prerequisite state
# (e.g. a database not accepting connections), operator intervention, system error.
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "55", "57", "58"})
# Of class 25 (invalid transaction state), only what a failover or the server itself gives
# us; the rest of the class are mistakes in our own SQL. A read-only transaction is a standby,
# a demoted primary or `default_transaction_read_only` during maintenance; 25P03 and 25P04
# are the server ending a session at a timeout.
TRANSIENT_SQLSTATES = frozenset({"25006", "25P03", "25P04"})


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, UNAVAILABLE):
        return True
    if not isinstance(exc, asyncpg.PostgresError):
        return False
    state = str(getattr(exc, "sqlstate", ""))
    return state[:2] in TRANSIENT_SQLSTATE_CLASSES or state in TRANSIENT_SQLSTATES


class SchemaMismatch(MailerError):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    found = []
    for entry in files("mailer.adapters").joinpath("migrations").iterdir():
        match = _MIGRATION_FILE.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def repeatables() -> list[tuple[str, str]]:
    """(name, SQL) of the files in `sql/`, in name order."""
    folder = files("mailer.adapters").joinpath("sql")
    entries = [e for e in folder.iterdir() if e.name.endswith(".sql")]
    return [(e.name, e.read_text(encoding="utf-8")) for e in sorted(entries, key=lambda e: e.name)]


LATEST_VERSION = migrations()[-1].version


def from_row(cls: type[Row], row: asyncpg.Record, **given: Any) -> Row:
    """A row as the dataclass whose fields are its columns of the same names; `given` holds
    the fields no column holds as they are (renamed, decoded, or not read)."""
    return cls(**{name: row[name] for name in _fields(cls) if name not in given}, **given)


@functools.cache
def _fields(cls: type[DataclassInstance]) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(cls) if field.init)


@asynccontextmanager
async def unavailable_is_temporary(what: str) -> AsyncIterator[None]:
    """Translate "cannot reach the database" into TemporaryFailure."""
    try:
        yield
    except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
        if not is_unavailable(exc):
            raise
        raise TemporaryFailure(f"database unavailable during {what}: {exc!r}") from exc


async def fetch(pool: asyncpg.Pool, what: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """`pool.fetch`, with "cannot reach the database" as TemporaryFailure naming `what`."""
    async with unavailable_is_temporary(what):
        rows: list[asyncpg.Record] = await pool.fetch(sql, *args)
    return rows


async def fetchrow(pool: asyncpg.Pool, what: str, sql: str, *args: Any) -> asyncpg.Record | None:
    """`pool.fetchrow`, with "cannot reach the database" as TemporaryFailure naming `what`."""
    async with unavailable_is_temporary(what):
        row: asyncpg.Record | None = await pool.fetchrow(sql, *args)
    return row


async def fetchval(pool: asyncpg.Pool, what: str, sql: str, *args: Any) -> Any:
    """`pool.fetchval`, with "cannot reach the database" as TemporaryFailure naming `what`."""
    async with unavailable_is_temporary(what):
        return await pool.fetchval(sql, *args)


async def execute(pool: asyncpg.Pool, what: str, sql: str, *args: Any) -> str:
    """`pool.execute` (its status, e.g. "UPDATE 3"), with "cannot reach the database" as
    TemporaryFailure naming `what`."""
    async with unavailable_is_temporary(what):
        status: str = await pool.execute(sql, *args)
    return status


@asynccontextmanager
async def transaction(pool: asyncpg.Pool, what: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a transaction; "cannot reach the database" becomes TemporaryFailure."""
    async with unavailable_is_temporary(what), pool.acquire() as conn, conn.transaction():
        yield conn


async def _connect(dsn: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn, timeout=10)
    except asyncpg.InvalidCatalogNameError:
        raise
    except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
        raise ConfigError(f"database: cannot connect ({exc})") from None


async def _ensure_database(dsn: str) -> asyncpg.Connection:
    """Connect, creating the database first when it does not exist yet."""
    try:
        return await _connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        pass
    try:
        _, name = parse_database_url(dsn)  # h1:p1,h2:p2 (multi-host) too
    except ValueError as exc:
        raise ConfigError(f"database: the URL {exc}") from None
    admin = await asyncpg.connect(dsn, database="postgres", timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name.replace(chr(34), chr(34) * 2)}"')
        log.info("created database %s", name)
    finally:
        await admin.close()
    # A standby named before the primary may not have replayed the CREATE yet, and asyncpg
    # does not go on to the next host when one says the database does not exist.
    for _ in range(50):
        try:
            return await _connect(dsn)
        except asyncpg.InvalidCatalogNameError:
            await asyncio.sleep(0.1)
    return await _connect(dsn)


async def schema_version(conn: asyncpg.Connection) -> int:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


async def _applied_versions(conn: asyncpg.Connection) -> set[int]:
    return {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}


async def migrate(dsn: str) -> list[Migration]:
    """Bring the schema up to date; returns the migrations applied now."""
    conn = await _ensure_database(dsn)
    applied: list[Migration] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now());"
            "ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text"
        )
        current = await schema_version(conn)
        if current > LATEST_VERSION:
            raise SchemaMismatch(
                f"database schema is at version {current}, newer than this mailer knows "
                f"({LATEST_VERSION}); upgrade mailer instead"
            )
        await _check_applied(conn)
        # Every migration not yet applied, in order, also one numbered below the newest
        # applied (work merged from a branch numbered earlier).
        done = await _applied_versions(conn)
        for migration in migrations():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            # `mailer migrate` reports what it applied: a log line would say it twice.
            log.debug("applied migration %04d_%s", migration.version, migration.name)
            applied.append(migration)
        async with conn.transaction():
            for name, sql in repeatables():
                await conn.execute(sql)
                log.debug("applied %s", name)
    finally:
        try:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        finally:
            await conn.close()
    return applied


async def _check_applied(conn: asyncpg.Connection) -> None:
    """Refuse a database where an applied migration differs from its file now. Rows from
    before checksums were kept get the file's checksum, once."""
    known = {m.version: m for m in migrations()}
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    for row in rows:
        migration = known.get(row["version"])
        if migration is None:
            continue
        if row["checksum"] is None:
            await conn.execute(
                "UPDATE schema_migrations SET checksum = $2 WHERE version = $1",
                migration.version,
                migration.checksum,
            )
        elif row["checksum"] != migration.checksum:
            raise SchemaMismatch(
                f"migration {migration.version:04d}_{migration.name} was applied to this "
                "database and has been edited since: restore the file as it was applied and "
                "put the change in a new migration"
            )


class _ReadOnlyWatch:
    """Replaces every pooled connection once one of them finds its server read-only.

    After a failover, or once `default_transaction_read_only` is lifted, a connection opened
    meanwhile still points at a server (or a session) that refuses writes; new connections
    go where writes are taken (`target_session_attrs=read-write`), so the pool starts over.
    """

    def __init__(self) -> None:
        self.pool: asyncpg.Pool | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def init(self, conn: asyncpg.Connection) -> None:
        conn.add_query_logger(self._seen)

    def _seen(self, record: asyncpg.connection.LoggedQuery) -> None:
        if self.pool is None or not isinstance(
            record.exception, asyncpg.ReadOnlySQLTransactionError
        ):
            return
        log.warning("the database refused a write (read-only): replacing pooled connections")
        task = asyncio.ensure_future(self.pool.expire_connections())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def new_pool(dsn: str, *, size: int) -> asyncpg.Pool:
    """A pool that opens no connection until `opened`: what uses it can be built first."""
    watch = _ReadOnlyWatch()
    pool = asyncpg.create_pool(
        dsn, min_size=1, max_size=size, command_timeout=30, timeout=10, init=watch.init
    )
    watch.pool = pool
    return pool


async def open_pool(dsn: str, *, size: int) -> asyncpg.Pool:
    """A pool for a schema that is exactly at LATEST_VERSION, else SchemaMismatch."""
    return await opened(new_pool(dsn, size=size))


async def opened(pool: asyncpg.Pool) -> asyncpg.Pool:
    """`pool` (from new_pool) open, for a schema that is exactly at LATEST_VERSION, else
    SchemaMismatch (and the pool closed again)."""
    try:
        await pool
    except asyncpg.InvalidCatalogNameError:
        raise SchemaMismatch("the database does not exist yet: run `mailer migrate`") from None
    except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
        raise ConfigError(f"database: cannot connect ({exc})") from None
    async with pool.acquire() as conn:
        current = await schema_version(conn)
        applied = await _applied_versions(conn) if current else set()
    missing = sorted({m.version for m in migrations()} - applied)
    if current > LATEST_VERSION:
        await pool.close()
        raise SchemaMismatch(
            f"database schema is at version {current}, this mailer needs {LATEST_VERSION}:"
            " upgrade mailer"
        )
    if missing:
        await pool.close()
        names = ", ".join(f"{version:04d}" for version in missing)
        raise SchemaMismatch(
            f"database schema is at version {current}, this mailer needs {LATEST_VERSION}"
            f" (not applied: {names}): run `mailer migrate`"
        )
    return pool


async def ping(pool: asyncpg.Pool) -> bool:
    """Whether the database takes writes now: a standby or a read-only server does not."""
    try:
        async with pool.acquire(timeout=2) as conn:
            writable = await conn.fetchval(
                "SELECT NOT pg_is_in_recovery()"
                " AND current_setting('transaction_read_only') = 'off'",
                timeout=2,
            )
    except (*UNAVAILABLE, asyncpg.PostgresError):
        return False
    if not writable:
        await pool.expire_connections()  # the next look gets a fresh one, maybe elsewhere
    return bool(writable)
