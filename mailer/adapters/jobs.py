"""Jobs seen before: the idempotency key of every job, with the digest of its payload. The
one writer of the `jobs` table, with the SQL function of `sql/jobs.sql`.

The same id published twice is handled once; the same id with another payload is a conflict.
Receipts register their ids as they claim (`claim_receipt` calls `register_job`), issues as
they are accepted (`register`); subscription changes use `Jobs`.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

import asyncpg

from mailer.adapters.database import execute, fetchrow

Seen = Literal["new", "done", "conflict"]


async def register(conn: asyncpg.Connection, job_id: UUID, kind: str, digest: bytes) -> Seen:
    """Register a job in the caller's transaction: "new", or, for an id registered before,
    whether it was the same job ("done") or another ("conflict")."""
    if await conn.fetchval("SELECT register_job($1, $2, $3)", job_id, kind, digest):
        return "new"
    row = await conn.fetchrow("SELECT kind, digest FROM jobs WHERE id = $1", job_id)
    same = row is not None and (row["kind"], row["digest"]) == (kind, digest)
    return "done" if same else "conflict"


class Jobs:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def seen(self, job_id: UUID, kind: str, digest: bytes) -> Seen:
        """Whether a job id was handled before, and with the same payload."""
        row = await fetchrow(
            self._pool, "seen job", "SELECT kind, digest FROM jobs WHERE id = $1", job_id
        )
        if row is None:
            return "new"
        return "done" if (row["kind"], row["digest"]) == (kind, digest) else "conflict"

    async def mark_done(self, job_id: UUID, kind: str, digest: bytes) -> None:
        await execute(
            self._pool, "mark job", "SELECT register_job($1, $2, $3)", job_id, kind, digest
        )
