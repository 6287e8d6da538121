"""Newsletter issues: accepted, started, paused, resumed, cancelled, and read. The one writer
of the `issues` table, with the SQL functions of `sql/issues.sql`.

An issue's deliveries are materialized as ledger rows in one `INSERT … SELECT` when it
starts, and its waiting ones cancelled when it is, by mailer/adapters/deliveries.py in the
same transaction; workers then claim chunks of them, so any number of worker processes share
an issue and no row goes to two of them. State changes (pause, resume, cancel, new work) are
announced on `mailer_issues`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import asyncpg

from mailer.adapters.database import transaction, unavailable_is_temporary
from mailer.adapters.deliveries import cancel_waiting, materialize
from mailer.adapters.jobs import register
from mailer.core.progress import RATE_WINDOW, Estimate, LedgerFacts, estimate

ISSUES_CHANNEL = "mailer_issues"
State = Literal["scheduled", "sending", "paused", "cancelled", "done"]
Accepted = Literal["accepted", "duplicate", "conflict"]


@dataclass(frozen=True, slots=True)
class ActiveIssue:
    id: UUID
    list_id: int


@dataclass(frozen=True, slots=True)
class Progress:
    issue_id: UUID
    list_slug: str
    send_at: datetime
    facts: LedgerFacts

    @property
    def state(self) -> State:
        return self.facts.state  # type: ignore[return-value]

    @property
    def total(self) -> int | None:
        return self.facts.total

    @property
    def counts(self) -> Mapping[str, int]:
        return self.facts.counts

    @property
    def started_at(self) -> datetime | None:
        return self.facts.started_at

    @property
    def finished_at(self) -> datetime | None:
        return self.facts.finished_at

    @property
    def measured_at(self) -> datetime:
        return self.facts.measured_at

    @property
    def estimate(self) -> Estimate:
        return estimate(self.facts)

    @property
    def rate(self) -> float:
        """Messages per second from the ledger; 0 when stalled or not sending (the estimate
        says which)."""
        return self.estimate.rate or 0.0


@dataclass(frozen=True, slots=True)
class IssueSummary:
    id: UUID
    state: State
    list_slug: str
    subject: str | dict[str, str]  # as the job gave it: one, or one per locale
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    total: int | None
    counts: dict[str, int]


# One pass over an issue's rows: counts by status, and what the rate and a stall are read
# from. Ages are by the database's clock.
_PROGRESS = """
SELECT now() AS measured_at,
       coalesce(jsonb_object_agg(c.status, c.n) FILTER (WHERE c.status IS NOT NULL), '{}')
           AS counts,
       coalesce(sum(c.recent), 0)::bigint AS sent_in_window,
       max(c.last_sent) AS last_sent_at,
       min(c.next_retry) AS next_retry_at,
       (SELECT count(*) FROM workers w WHERE w.stopped_at IS NULL
           AND w.heartbeat_at >= now() - w.gone_after)::int AS workers_alive
  FROM (SELECT status, count(*) AS n,
               count(*) FILTER (WHERE status IN ('sent', 'captured')
                                  AND updated_at > now() - make_interval(secs => $2)) AS recent,
               max(updated_at) FILTER (WHERE status IN ('sent', 'captured')) AS last_sent,
               min(not_before) FILTER (WHERE status = 'retrying') AS next_retry
          FROM deliveries WHERE job_id = $1 GROUP BY status) c
"""

# A finished issue's counts as stored when it finished; an active one's counted now (the
# count runs only for the rows whose final counts are NULL: coalesce is lazy).
_LIST = """
SELECT i.id, i.state, l.slug, i.payload -> 'subject' AS subject, i.created_at, i.started_at,
       i.finished_at, i.total, i.final_counts IS NOT NULL AS stored,
       coalesce(i.final_counts,
                (SELECT coalesce(jsonb_object_agg(c.status, c.n), '{}')
                   FROM (SELECT status, count(*) AS n FROM deliveries d WHERE d.job_id = i.id
                         GROUP BY status) c)) AS counts
  FROM issues i JOIN lists l ON l.id = i.list_id
 WHERE $2::text IS NULL OR i.state = $2
 ORDER BY i.created_at DESC, i.id
 LIMIT $1
"""


class Issues:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

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
            seen = await register(conn, issue_id, "newsletter", digest)
            if seen != "new":
                return "duplicate" if seen == "done" else "conflict"
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
                total = await materialize(conn, due["id"], due["list_id"])
                await conn.execute(
                    "UPDATE issues SET state = CASE WHEN $2 = 0 THEN 'done' ELSE 'sending' END,"
                    " total = $2, started_at = now(),"
                    " finished_at = CASE WHEN $2 = 0 THEN now() END,"
                    " final_counts = CASE WHEN $2 = 0 THEN '{}'::jsonb END WHERE id = $1",
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
                await cancel_waiting(conn, issue_id)
                await conn.execute("UPDATE issues SET finished_at = now() WHERE id = $1", issue_id)
                # Its final counts, unless messages in flight are still to be recorded.
                await conn.execute("SELECT issues_done($1)", [issue_id])
            await conn.execute("SELECT pg_notify($1, $2)", ISSUES_CHANNEL, f"{issue_id}:{target}")
        return before, target

    async def progress(self, issue_id: UUID) -> Progress | None:
        async with unavailable_is_temporary("progress"):
            issue = await self._pool.fetchrow(
                "SELECT i.*, l.slug, now() AS measured_at"
                " FROM issues i JOIN lists l ON l.id = i.list_id WHERE i.id = $1",
                issue_id,
            )
            if issue is None:
                return None
            # A finished issue's rows no longer change: its stored counts, no ledger scan.
            ledger = (
                None
                if issue["final_counts"] is not None
                else await self._pool.fetchrow(_PROGRESS, issue_id, RATE_WINDOW)
            )
        facts = LedgerFacts(
            state=issue["state"],
            total=issue["total"],
            counts=json.loads(ledger["counts"] if ledger else issue["final_counts"]),
            measured_at=ledger["measured_at"] if ledger else issue["measured_at"],
            started_at=issue["started_at"],
            finished_at=issue["finished_at"],
            sent_in_window=ledger["sent_in_window"] if ledger else 0,
            last_sent_at=ledger["last_sent_at"] if ledger else None,
            next_retry_at=ledger["next_retry_at"] if ledger else None,
            workers_alive=ledger["workers_alive"] if ledger else 0,
        )
        return Progress(issue_id, issue["slug"], issue["send_at"], facts)

    async def newest(self, *, limit: int = 50, state: State | None = None) -> list[IssueSummary]:
        """Issues newest first, with their counts by outcome: stored for finished issues,
        counted for active ones."""
        async with unavailable_is_temporary("list issues"):
            rows = await self._pool.fetch(_LIST, limit, state)
            # Cancelled with messages in flight that were later handed back rather than
            # recorded (their worker stopped): counted this once, stored for the next time.
            unstored = [r["id"] for r in rows if r["state"] == "cancelled" and not r["stored"]]
            if unstored:
                await self._pool.execute("SELECT issues_done($1)", unstored)
        return [
            IssueSummary(
                id=r["id"],
                state=r["state"],
                list_slug=r["slug"],
                subject=json.loads(r["subject"]),
                created_at=r["created_at"],
                started_at=r["started_at"],
                finished_at=r["finished_at"],
                total=r["total"],
                counts=json.loads(r["counts"]),
            )
            for r in rows
        ]

    async def active(self) -> list[Progress]:
        """Every issue sending or paused, with its progress: what operators watch."""
        async with unavailable_is_temporary("active issues"):
            ids = await self._pool.fetch(
                "SELECT id FROM issues WHERE state IN ('sending', 'paused') ORDER BY created_at"
            )
        found = [await self.progress(row["id"]) for row in ids]
        return [progress for progress in found if progress is not None]
