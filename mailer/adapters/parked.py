"""Parked jobs in PostgreSQL, the one owner of `parked_jobs`.

A job that can never succeed as it is waits here for an operator, who looks at it (a
SELECT: looking changes nothing), sends it back to its queue, or purges it. A row is the
job's body byte for byte, its AMQP properties (requeued with them), where it came from, why
it was parked, when, and how many times its queue had handed it out.

Recording is idempotent: the body's SHA-256 is unique, so the same job parked twice (a
redelivery after a lost ack, a move from mailer.dead retried) is one row.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import pamqp.decode
import pamqp.encode

from mailer.adapters.database import (
    UNAVAILABLE,
    fetch,
    fetchrow,
    fetchval,
    from_row,
    unavailable_is_temporary,
)

REASON_CHARS = 1000
JOB_ID_CHARS = 200
ORIGIN_CHARS = 255  # an AMQP queue name's limit
_COLUMNS = "id, ref, job_id, origin, reason, parked_at, deliveries"


def body_ref(body: bytes) -> str:
    """A short name for a parked job: the start of the SHA-256 of its body."""
    return hashlib.sha256(body).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class ParkedJob:
    body: bytes
    origin: str | None
    reason: str
    parked_at: datetime
    job_id: str | None
    deliveries: int | None
    # AMQP properties by aio-pika's names: headers, content_type, message_id, ...
    properties: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None  # the row's, once recorded

    @property
    def ref(self) -> str:
        return body_ref(self.body)

    @property
    def headers(self) -> dict[str, Any]:
        headers = self.properties.get("headers")
        return dict(headers) if isinstance(headers, Mapping) else {}


@dataclass(frozen=True, slots=True)
class ParkedRow:
    """One parked job as a list shows it: everything but its body and properties."""

    id: int
    ref: str
    job_id: str | None
    origin: str | None
    reason: str
    parked_at: datetime
    deliveries: int | None
    size: int


def encode_properties(properties: Mapping[str, Any]) -> bytes:
    """AMQP properties as an AMQP field table (pamqp, as aiormq encodes them on the wire).
    A value AMQP cannot carry again is left out rather than losing the whole job."""
    table: dict[str, Any] = {}
    for name, value in properties.items():
        if value is None:
            continue
        try:
            table[name] = _encodable(value)
            pamqp.encode.field_table({name: table[name]})
        except (TypeError, ValueError, OverflowError):
            table.pop(name, None)
    return pamqp.encode.field_table(table)


def decode_properties(data: bytes) -> dict[str, Any]:
    _, table = pamqp.decode.field_table(data)
    return table


def _encodable(value: Any) -> Any:
    """A long string that was not UTF-8 arrives as bytes, which pamqp writes back only as a
    byte array: the same bytes, in the field type AMQP has for them."""
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, Mapping):
        return {str(k): _encodable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encodable(v) for v in value]
    return value


def _text(value: str | None, limit: int) -> str | None:
    """Text PostgreSQL takes: no NUL, no lone surrogate; at most `limit` characters."""
    if value is None:
        return None
    clean = value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return clean[:limit]


def _row(record: asyncpg.Record) -> ParkedRow:
    return from_row(ParkedRow, record)


def _job(record: asyncpg.Record) -> ParkedJob:
    return from_row(
        ParkedJob,
        record,
        body=bytes(record["body"]),
        properties=decode_properties(bytes(record["properties"])),
    )


class Taking:
    """A parked job held (its row locked) while it is requeued or purged."""

    def __init__(self, job: ParkedJob | None) -> None:
        self.job = job
        self.kept = False

    def keep(self) -> None:
        """Leave the row where it is."""
        self.kept = True


class ParkedJobs:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(self, job: ParkedJob) -> bool:
        """Store a parked job; False when the same body was parked already (kept as it was).
        TemporaryFailure when the database cannot be reached."""
        row_id = await fetchval(
            self._pool,
            "parking a job",
            "INSERT INTO parked_jobs (digest, body, origin, reason, parked_at, job_id,"
            " deliveries, properties) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (digest) DO NOTHING RETURNING id",
            hashlib.sha256(job.body).digest(),
            job.body,
            _text(job.origin, ORIGIN_CHARS),
            _text(job.reason, REASON_CHARS) or "unknown",
            job.parked_at,
            _text(job.job_id, JOB_ID_CHARS),
            job.deliveries,
            encode_properties(job.properties),
        )
        return row_id is not None

    async def first(self, limit: int) -> list[ParkedRow]:
        """The oldest `limit` parked jobs, oldest first."""
        rows = await fetch(
            self._pool,
            "listing parked jobs",
            f"SELECT {_COLUMNS}, length(body) AS size FROM parked_jobs"
            " ORDER BY parked_at, id LIMIT $1",
            limit,
        )
        return [_row(r) for r in rows]

    async def one(self, ref: str) -> ParkedJob | None:
        """The parked job a ref or a job id names (the oldest, if a job id names several)."""
        found = await fetchrow(
            self._pool,
            "reading a parked job",
            "SELECT * FROM parked_jobs WHERE ref = $1 OR job_id = $1"
            " ORDER BY parked_at, id LIMIT 1",
            ref,
        )
        return _job(found) if found is not None else None

    async def counts(self) -> dict[str | None, int]:
        """How many jobs are parked, by the queue they came from (None: not known)."""
        rows = await fetch(
            self._pool,
            "counting parked jobs",
            "SELECT origin, count(*) AS n FROM parked_jobs GROUP BY origin",
        )
        return {r["origin"]: r["n"] for r in rows}

    async def oldest_parked_at(self) -> datetime | None:
        found: datetime | None = await fetchval(
            self._pool, "counting parked jobs", "SELECT min(parked_at) FROM parked_jobs"
        )
        return found

    async def selected(self, refs: Iterable[str] | None) -> list[ParkedRow]:
        """The jobs named by refs or job ids (None: every one), in the order they were
        recorded, as they are now: what is parked later is not part of the selection."""
        rows = await fetch(
            self._pool,
            "selecting parked jobs",
            f"SELECT {_COLUMNS}, length(body) AS size FROM parked_jobs"
            " WHERE $1::text[] IS NULL OR ref = ANY($1) OR job_id = ANY($1) ORDER BY id",
            None if refs is None else sorted(set(refs)),
        )
        return [_row(r) for r in rows]

    @asynccontextmanager
    async def taking(self, row_id: int) -> AsyncIterator[Taking]:
        """Hold one parked job while it is acted on: its row is taken (another operator's
        action passes it over) and is gone when the block ends, unless the block raised or
        called `keep()`. `job` is None when it is gone or held by someone else.

        The row is deleted before the block runs, in a transaction committed after it: a
        requeued job that the worker parks again at once waits for that commit and is then
        recorded anew, instead of meeting the old row and being dropped as a repeat."""
        async with unavailable_is_temporary("taking a parked job"):
            conn = await self._pool.acquire()
        try:
            transaction = conn.transaction()
            async with unavailable_is_temporary("taking a parked job"):
                await transaction.start()
                found = await conn.fetchrow(
                    "DELETE FROM parked_jobs WHERE id = $1 AND id IN (SELECT id FROM parked_jobs"
                    " WHERE id = $1 FOR UPDATE SKIP LOCKED) RETURNING *",
                    row_id,
                )
            taking = Taking(_job(found) if found is not None else None)
            try:
                yield taking
            except BaseException:
                with contextlib.suppress(*UNAVAILABLE, asyncpg.PostgresError):
                    await transaction.rollback()
                raise
            async with unavailable_is_temporary("deleting a parked job"):
                if taking.kept:
                    await transaction.rollback()
                else:
                    await transaction.commit()
        finally:
            await self._pool.release(conn)
