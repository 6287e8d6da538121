"""Newsletter issues and their deliveries: accept, start, hand out in chunks, record.

An issue's deliveries are materialized as ledger rows in one `INSERT … SELECT` when it
starts; workers then claim chunks of them with `FOR UPDATE SKIP LOCKED`, so any number of
worker processes share an issue and no row goes to two of them. A claim is a lease the
worker keeps renewing; a crashed worker's rows become claimable again when it lapses.
State changes (pause, resume, cancel, new work) are announced on `mailer_issues`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import asyncpg

from mailer.adapters.database import transaction, unavailable_is_temporary, with_retries
from mailer.adapters.ledger import HAND_BACK
from mailer.core.consent import SubscriptionStatus, SuppressionReason

ISSUES_CHANNEL = "mailer_issues"
State = Literal["scheduled", "sending", "paused", "cancelled", "done"]
Accepted = Literal["accepted", "duplicate", "conflict"]


@dataclass(frozen=True, slots=True)
class ActiveIssue:
    id: UUID
    list_id: int


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A delivery claimed for sending, with what the database says of its recipient now."""

    id: int
    issue_id: UUID
    attempts: int
    created_at: datetime
    subscriber_id: int | None  # None: the person was erased
    email: str | None
    name: str | None
    locale: Literal["pl", "en"] | None
    subscription: SubscriptionStatus | None
    suppression: SuppressionReason | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to record for one claimed delivery."""

    delivery_id: int
    status: Literal["sent", "failed", "retrying", "suppressed", "cancelled", "pending"]
    attempted: bool = False
    reply: str | None = None
    message_id: str | None = None
    detail: str | None = None
    not_before: datetime | None = None
    hard_bounce: bool = False


@dataclass(frozen=True, slots=True)
class Progress:
    issue_id: UUID
    list_slug: str
    state: State
    send_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    total: int | None
    counts: dict[str, int]
    rate: float  # messages sent per second, over the last minute (or since it started)


_CLAIM = """
WITH picked AS (
    SELECT d.id, d.subscriber_id, d.recipient_key, d.attempts, d.created_at
      FROM deliveries d
     WHERE d.job_id = $1 AND d.status IN ('pending', 'retrying')
       AND (d.not_before IS NULL OR d.not_before <= now())
     ORDER BY d.id
     LIMIT $3
       FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE deliveries d
       SET status = 'sending', claimed_by = $2, claimed_until = now() + $4, updated_at = now()
      FROM picked p
     WHERE d.id = p.id
    RETURNING d.id
)
SELECT p.id, p.attempts, p.created_at, s.id AS subscriber_id, s.email, s.name, s.locale,
       sub.status AS subscription, x.reason AS suppression
  FROM picked p
  JOIN claimed c ON c.id = p.id
  LEFT JOIN subscribers s ON s.id = p.subscriber_id
  LEFT JOIN subscriptions sub ON sub.subscriber_id = s.id AND sub.list_id = $5
  LEFT JOIN suppressions x ON x.address_key = p.recipient_key
 ORDER BY p.id
"""

_MATERIALIZE = """
INSERT INTO deliveries (job_id, recipient_key, subscriber_id)
SELECT $1, s.address_key, s.id
  FROM subscriptions sub JOIN subscribers s ON s.id = sub.subscriber_id
 WHERE sub.list_id = $2 AND sub.status = 'subscribed'
ON CONFLICT (job_id, recipient_key) DO NOTHING
"""


class Issues:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        worker_id: UUID,
        lease: float,
        held: set[int] | None = None,
    ) -> None:
        self._pool = pool
        self._worker_id = worker_id
        self._lease = timedelta(seconds=lease)
        self._held = held if held is not None else set()  # the claims in hand (Ledger.held)

    async def accept(
        self,
        issue_id: UUID,
        digest: bytes,
        list_id: int,
        payload: dict[str, Any],
        send_at: datetime | None,
    ) -> Accepted:
        """Store a new issue, scheduled for `send_at` (or now)."""
        async with transaction(self._pool, "accept issue") as conn:
            inserted = await conn.fetchval(
                "INSERT INTO jobs (id, kind, digest) VALUES ($1, 'newsletter', $2)"
                " ON CONFLICT (id) DO NOTHING RETURNING true",
                issue_id,
                digest,
            )
            if not inserted:
                row = await conn.fetchrow("SELECT kind, digest FROM jobs WHERE id = $1", issue_id)
                same = row is not None and row["kind"] == "newsletter" and row["digest"] == digest
                return "duplicate" if same else "conflict"
            await conn.execute(
                "INSERT INTO issues (id, list_id, payload, state, send_at)"
                " VALUES ($1, $2, $3::jsonb, 'scheduled', coalesce($4, now()))",
                issue_id,
                list_id,
                json.dumps(payload),
                send_at,
            )
            await conn.execute("SELECT pg_notify($1, $2)", ISSUES_CHANNEL, f"{issue_id}:scheduled")
        return "accepted"

    async def start_due(self) -> list[tuple[UUID, int]]:
        """Start every issue whose time has come: materialize its deliveries, one statement.
        Returns (issue, deliveries) for each issue started."""
        started: list[tuple[UUID, int]] = []
        while True:
            async with transaction(self._pool, "start issue") as conn:
                due = await conn.fetchrow(
                    "SELECT id, list_id FROM issues WHERE state = 'scheduled' AND send_at <= now()"
                    " ORDER BY send_at LIMIT 1 FOR UPDATE SKIP LOCKED"
                )
                if due is None:
                    return started
                result: str = await conn.execute(_MATERIALIZE, due["id"], due["list_id"])
                total = int(result.rsplit(" ", 1)[1])
                await conn.execute(
                    "UPDATE issues SET state = CASE WHEN $2 = 0 THEN 'done' ELSE 'sending' END,"
                    " total = $2, started_at = now(),"
                    " finished_at = CASE WHEN $2 = 0 THEN now() END WHERE id = $1",
                    due["id"],
                    total,
                )
                await conn.execute(
                    "SELECT pg_notify($1, $2)", ISSUES_CHANNEL, f"{due['id']}:sending"
                )
            started.append((due["id"], total))

    async def sending(self) -> list[ActiveIssue]:
        async with unavailable_is_temporary("active issues"):
            rows = await self._pool.fetch(
                "SELECT id, list_id FROM issues WHERE state = 'sending' ORDER BY created_at"
            )
        return [ActiveIssue(r["id"], r["list_id"]) for r in rows]

    async def payload(self, issue_id: UUID) -> dict[str, Any]:
        """The job an issue was made from, as accepted."""
        async with unavailable_is_temporary("issue payload"):
            text: str = await self._pool.fetchval(
                "SELECT payload FROM issues WHERE id = $1", issue_id
            )
        loaded: dict[str, Any] = json.loads(text)
        return loaded

    async def claim(self, issue: ActiveIssue, size: int) -> list[ClaimedDelivery]:
        """One round trip: claim up to `size` deliveries and read their recipients' consent."""
        async with unavailable_is_temporary("claim chunk"):
            rows = await self._pool.fetch(
                _CLAIM, issue.id, self._worker_id, size, self._lease, issue.list_id
            )
        self._held.update(r["id"] for r in rows)
        return [
            ClaimedDelivery(
                id=r["id"],
                issue_id=issue.id,
                attempts=r["attempts"],
                created_at=r["created_at"],
                subscriber_id=r["subscriber_id"],
                email=r["email"],
                name=r["name"],
                locale=r["locale"],
                subscription=r["subscription"],
                suppression=r["suppression"],
            )
            for r in rows
        ]

    async def finish(
        self,
        outcomes: Sequence[Outcome],
        *,
        slot_holder: UUID | None,
        deferred: Sequence[str] = (),
        accepted: Sequence[str] = (),
        default_rate: float = 0.0,
    ) -> list[UUID]:
        """One round trip: record outcomes and, at the end of a chunk, give back its
        throttle slots and report how domains answered; returns the issues it completed."""

        async def call() -> list[UUID]:
            row = await self._pool.fetchrow(
                "SELECT * FROM finish_chunk($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,"
                " $13)",
                self._worker_id,
                slot_holder,
                [o.delivery_id for o in outcomes],
                [o.status for o in outcomes],
                [o.attempted for o in outcomes],
                [o.reply for o in outcomes],
                [o.message_id for o in outcomes],
                [o.detail for o in outcomes],
                [o.not_before for o in outcomes],
                [o.hard_bounce for o in outcomes],
                list(deferred),
                list(accepted),
                default_rate,
            )
            assert row is not None
            return list(row["finished"] or [])

        finished = await with_retries("finish chunk", call)
        self._held.difference_update(o.delivery_id for o in outcomes)
        return finished

    async def record(self, outcomes: Sequence[Outcome]) -> None:
        """Record outcomes while their chunk is still sending."""
        await self.finish(outcomes, slot_holder=None)

    async def reclaim_expired(self, issue_ids: Sequence[UUID]) -> int:
        """Give the rows of other workers that stopped renewing their lease back to the pool.
        This worker's rows in hand are always recorded by itself, however late; its own
        rows not in hand are claims whose reply it never got."""
        async with unavailable_is_temporary("reclaim"):
            result: str = await self._pool.execute(
                f"UPDATE deliveries d SET {HAND_BACK}"
                " WHERE job_id = ANY($1) AND status = 'sending' AND claimed_until < now()"
                " AND (claimed_by <> $2 OR NOT id = ANY($3))",
                list(issue_ids),
                self._worker_id,
                list(self._held),
            )
        return int(result.rsplit(" ", 1)[1])

    async def complete(self, issue_ids: Sequence[UUID]) -> list[UUID]:
        async with unavailable_is_temporary("complete"):
            rows = await self._pool.fetch("SELECT issues_done($1) AS id", list(issue_ids))
        return [r["id"] for r in rows]

    async def set_state(
        self, issue_id: UUID, action: Literal["pause", "resume", "cancel"]
    ) -> tuple[State | None, State | None]:
        """(state before, state after); after is None when the action does not apply."""
        allowed: dict[str, tuple[tuple[str, ...], State]] = {
            "pause": (("scheduled", "sending"), "paused"),
            "resume": (("paused",), "sending"),
            "cancel": (("scheduled", "sending", "paused"), "cancelled"),
        }
        sources, target = allowed[action]
        async with transaction(self._pool, action) as conn:
            row = await conn.fetchrow(
                "SELECT state, started_at FROM issues WHERE id = $1 FOR UPDATE", issue_id
            )
            if row is None:
                return None, None
            before: State = row["state"]
            if before not in sources:
                return before, None
            if action == "resume" and row["started_at"] is None:
                target = "scheduled"  # paused before it started: wait for send_at again
            await conn.execute("UPDATE issues SET state = $2 WHERE id = $1", issue_id, target)
            if target == "cancelled":
                await conn.execute(
                    "UPDATE deliveries SET status = 'cancelled', detail = 'issue cancelled',"
                    " updated_at = now() WHERE job_id = $1 AND status IN ('pending', 'retrying')",
                    issue_id,
                )
                await conn.execute("UPDATE issues SET finished_at = now() WHERE id = $1", issue_id)
            await conn.execute("SELECT pg_notify($1, $2)", ISSUES_CHANNEL, f"{issue_id}:{target}")
        return before, target

    async def progress(self, issue_id: UUID) -> Progress | None:
        async with unavailable_is_temporary("progress"):
            issue = await self._pool.fetchrow(
                "SELECT i.*, l.slug FROM issues i JOIN lists l ON l.id = i.list_id WHERE i.id = $1",
                issue_id,
            )
            if issue is None:
                return None
            counts = await self._pool.fetch(
                "SELECT status, count(*) AS n FROM deliveries WHERE job_id = $1 GROUP BY status",
                issue_id,
            )
            recent = await self._pool.fetchrow(
                "WITH span AS (SELECT greatest(now() - interval '60 seconds',"
                "   coalesce($2, now())) AS since)"
                " SELECT count(*) AS sent,"
                "   extract(epoch FROM now() - (SELECT since FROM span)) AS seconds"
                " FROM deliveries WHERE job_id = $1 AND status = 'sent'"
                "   AND updated_at > (SELECT since FROM span)",
                issue_id,
                issue["started_at"],
            )
            assert recent is not None
        return Progress(
            issue_id=issue_id,
            list_slug=issue["slug"],
            state=issue["state"],
            send_at=issue["send_at"],
            started_at=issue["started_at"],
            finished_at=issue["finished_at"],
            total=issue["total"],
            counts={r["status"]: r["n"] for r in counts},
            rate=recent["sent"] / float(recent["seconds"]) if recent["seconds"] else 0.0,
        )
