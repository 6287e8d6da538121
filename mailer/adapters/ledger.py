"""The ledger: one row per (job, recipient) with its outcome, and the suppression list.

Every method is one round trip. A delivery being sent is claimed by one worker for a lease
that the worker keeps renewing; a crashed worker's claims expire and any worker may take
them over.

Only the claims in hand (`held`) are renewed: a claim that committed but whose reply never
arrived (the session cut at that moment) is unknown to the worker, so it lapses and is
taken over like a crashed worker's, instead of being renewed for as long as the process lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

import asyncpg

from mailer.adapters.database import unavailable_is_temporary, with_retries
from mailer.core.consent import SuppressionReason

Verdict = Literal["claimed", "done", "busy", "conflict"]
Status = Literal["pending", "sending", "sent", "retrying", "failed", "suppressed", "cancelled"]
Seen = Literal["new", "done", "conflict"]

# A claimed delivery given back unattempted: as it was, or cancelled if its issue was meanwhile.
HAND_BACK = (
    "status = CASE WHEN EXISTS (SELECT 1 FROM issues i WHERE i.id = d.job_id"
    "                           AND i.state = 'cancelled') THEN 'cancelled'"
    "              WHEN d.attempts > 0 THEN 'retrying' ELSE 'pending' END,"
    " claimed_by = NULL, claimed_until = NULL, updated_at = now()"
)


@dataclass(frozen=True, slots=True)
class Claim:
    verdict: Verdict
    delivery_id: int | None
    status: Status | None
    attempts: int
    first_seen: datetime
    suppression: SuppressionReason | None


@dataclass(frozen=True, slots=True)
class Record:
    """An outcome to write for a claimed delivery."""

    status: Status
    attempted: bool
    reply: str | None = None
    message_id: str | None = None
    detail: str | None = None
    suppress: Literal["hard_bounce"] | None = None


class Ledger:
    def __init__(self, pool: asyncpg.Pool, *, worker_id: UUID, lease: float) -> None:
        self._pool = pool
        self.worker_id = worker_id
        self._lease = timedelta(seconds=lease)
        self.held: set[int] = set()  # delivery ids claimed and not yet settled, shared with Issues

    async def claim_receipt(self, job_id: UUID, digest: bytes, recipient_key: bytes) -> Claim:
        async with unavailable_is_temporary("claim"):
            row = await self._pool.fetchrow(
                "SELECT * FROM claim_receipt($1, $2, $3, $4, $5)",
                job_id,
                digest,
                recipient_key,
                self.worker_id,
                self._lease,
            )
        assert row is not None
        if row["verdict"] == "claimed":
            self.held.add(row["delivery_id"])
        return Claim(
            verdict=row["verdict"],
            delivery_id=row["delivery_id"],
            status=row["status"],
            attempts=row["attempts"] or 0,
            first_seen=row["first_seen"],
            suppression=row["suppression"],
        )

    async def record(self, delivery_id: int, record: Record) -> int | None:
        """Write the outcome; the attempt count after it, or None if the claim was lost.

        Retried for a while when the database is briefly unreachable: after the relay said
        250, giving up here is what would let a duplicate through.
        """

        async def call() -> int | None:
            value = await self._pool.fetchval(
                "SELECT attempts FROM record_delivery($1, $2, $3, $4, $5, $6, $7, $8)",
                delivery_id,
                self.worker_id,
                record.status,
                record.attempted,
                record.reply,
                record.message_id,
                record.detail,
                record.suppress,
            )
            return int(value) if value is not None else None

        attempts = await with_retries("record", call)
        self.held.discard(delivery_id)
        return attempts

    async def renew_leases(self) -> int:
        """Extend this worker's claims; returns how many it holds."""
        async with unavailable_is_temporary("renew leases"):
            result: str = await self._pool.execute(
                "UPDATE deliveries SET claimed_until = now() + $2"
                " WHERE claimed_by = $1 AND status = 'sending' AND id = ANY($3)",
                self.worker_id,
                self._lease,
                list(self.held),
            )
        return int(result.rsplit(" ", 1)[1])

    async def release(self, delivery_id: int) -> None:
        """Hand back one claimed delivery untouched: it was not attempted."""
        async with unavailable_is_temporary("release"):
            await self._pool.execute(
                f"UPDATE deliveries d SET {HAND_BACK}"
                " WHERE id = $1 AND claimed_by = $2 AND status = 'sending'",
                delivery_id,
                self.worker_id,
            )
        self.held.discard(delivery_id)

    async def release_claims(self) -> int:
        """On shutdown: hand back what this worker claimed but did not finish."""
        async with unavailable_is_temporary("release claims"):
            result: str = await self._pool.execute(
                f"UPDATE deliveries d SET {HAND_BACK} WHERE claimed_by = $1 AND status = 'sending'",
                self.worker_id,
            )
        return int(result.rsplit(" ", 1)[1])

    async def seen_job(self, job_id: UUID, kind: str, digest: bytes) -> Seen:
        """Whether a job id was handled before, and with the same payload."""
        async with unavailable_is_temporary("seen job"):
            row = await self._pool.fetchrow("SELECT kind, digest FROM jobs WHERE id = $1", job_id)
        if row is None:
            return "new"
        return "done" if (row["kind"], row["digest"]) == (kind, digest) else "conflict"

    async def mark_job_done(self, job_id: UUID, kind: str, digest: bytes) -> None:
        async with unavailable_is_temporary("mark job"):
            await self._pool.execute(
                "INSERT INTO jobs (id, kind, digest) VALUES ($1, $2, $3)"
                " ON CONFLICT (id) DO NOTHING",
                job_id,
                kind,
                digest,
            )
