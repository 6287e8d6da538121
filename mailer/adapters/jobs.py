"""Jobs seen before: the idempotency key of every job, with the digest of its payload.

The same id published twice is handled once; the same id with another payload is a conflict.
Receipts and issues register their ids as they claim; subscription changes use this.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

import asyncpg

from mailer.adapters.database import unavailable_is_temporary

Seen = Literal["new", "done", "conflict"]


class Jobs:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def seen(self, job_id: UUID, kind: str, digest: bytes) -> Seen:
        """Whether a job id was handled before, and with the same payload."""
        async with unavailable_is_temporary("seen job"):
            row = await self._pool.fetchrow("SELECT kind, digest FROM jobs WHERE id = $1", job_id)
        if row is None:
            return "new"
        return "done" if (row["kind"], row["digest"]) == (kind, digest) else "conflict"

    async def mark_done(self, job_id: UUID, kind: str, digest: bytes) -> None:
        async with unavailable_is_temporary("mark job"):
            await self._pool.execute(
                "INSERT INTO jobs (id, kind, digest) VALUES ($1, $2, $3)"
                " ON CONFLICT (id) DO NOTHING",
                job_id,
                kind,
                digest,
            )
