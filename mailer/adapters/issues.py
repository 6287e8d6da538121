"""Newsletter issues: accepted, started, paused, resumed, cancelled, and read. The one writer
of the `issues` table, with the SQL functions of `sql/issues.sql`.

An issue's deliveries are materialized as ledger rows in one `INSERT … SELECT` when it
starts, and its waiting ones cancelled when it is, by mailer/adapters/deliveries.py in the
same transaction; workers then claim chunks of them, so any number of worker processes share
an issue and no row goes to two of them. State changes (pause, resume, cancel, new work) are
announced on `mailer_issues`.

Every reader (`mailer issue list|status`, the console, the metrics) sees an issue one way: an
`IssueSummary` with its counts by status, and the `LedgerFacts` its rate and ETA are estimated
from (mailer/core/progress.py). A finished issue (done, or cancelled with its last messages
settled) is counted once, when it finishes: its counts and its last send are stored on its
row, a late bounce moves its count there, and its deliveries are never read again to show
it. An active issue is counted from its deliveries each time it is read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import asyncpg

from mailer.adapters import outbox
from mailer.adapters.database import execute, fetch, fetchrow, fetchval, from_row, transaction
from mailer.adapters.deliveries import cancel_waiting, materialize
from mailer.adapters.jobs import register
from mailer.core.deliveries import UNFINISHED
from mailer.core.issues import TRANSITIONS, UNDER_WAY, IssueAction, IssueState
from mailer.core.progress import RATE_WINDOW, Estimate, LedgerFacts, describe, estimate

ISSUES_CHANNEL = "mailer_issues"
Accepted = Literal["accepted", "duplicate", "conflict"]


@dataclass(frozen=True, slots=True)
class ActiveIssue:
    id: UUID
    list_id: int


@dataclass(frozen=True, slots=True)
class IssueSummary:
    """An issue as operators see it, wherever they look."""

    id: UUID
    list_slug: str
    state: IssueState
    subject: str  # in the list's default locale, else the first one the job gave
    subjects: str | dict[str, str]  # as the job gave it: one, or one per locale
    total: int | None
    created_at: datetime
    send_at: datetime  # when it starts, or started, sending
    started_at: datetime | None
    finished_at: datetime | None
    measured_at: datetime  # when it was read, by the database's clock
    counts: dict[str, int] = field(default_factory=dict)  # deliveries by status
    final: bool = False  # finished: its counts stored, its deliveries no longer read
    last_sent_at: datetime | None = None  # stored once final; while active, LedgerFacts has it

    @property
    def done(self) -> int:
        return sum(n for status, n in self.counts.items() if status not in UNFINISHED)

    @property
    def size(self) -> int:
        return self.total if self.total is not None else sum(self.counts.values())

    @property
    def remaining(self) -> int:
        return sum(self.counts.get(status, 0) for status in UNFINISHED)


@dataclass(frozen=True, slots=True)
class Progress:
    """An issue with what its rate and ETA are estimated from."""

    issue: IssueSummary
    facts: LedgerFacts

    @property
    def estimate(self) -> Estimate:
        return estimate(self.facts)

    @property
    def rate(self) -> float:
        """Messages per second from the ledger; 0 when stalled or not sending (the estimate
        says which)."""
        return self.estimate.rate or 0.0

    @property
    def said(self) -> str:
        """The rate and ETA, or why there are none, in one line."""
        return describe(self.estimate)


# Issues with their counts: a finished issue's as stored when it finished, an active one's
# counted now (the count runs only for the rows whose final counts are NULL: coalesce is
# lazy, and the count is evaluated after the LIMIT).
_SUMMARIES = """
SELECT i.id, l.slug, i.state, i.payload -> 'subject' AS subject, i.total, i.created_at,
       i.send_at, i.started_at, i.finished_at, i.last_sent_at, now() AS measured_at,
       i.final_counts IS NOT NULL AS final,
       coalesce(i.final_counts,
                (SELECT coalesce(jsonb_object_agg(c.status, c.n), '{}')
                   FROM (SELECT status, count(*) AS n FROM deliveries d WHERE d.job_id = i.id
                         GROUP BY status) c)) AS counts
  FROM issues i JOIN lists l ON l.id = i.list_id
"""
_ONE = _SUMMARIES + " WHERE i.id = $1"
_NEWEST = (
    _SUMMARIES
    + " WHERE $2::text[] IS NULL OR i.state = ANY($2) ORDER BY i.created_at DESC, i.id LIMIT $1"
)

# What an active issue's rate and ETA are estimated from, its counts read already: only the
# rate window's rows, through the index on updated_at; the whole issue only when nothing was
# sent in the window, for the newest send; the next retry only when nothing else is left.
_FACTS = """
WITH window_sent AS (
    SELECT count(*) AS n, max(updated_at) AS last FROM deliveries
     WHERE job_id = $1 AND status IN ('sent', 'captured')
       AND updated_at > now() - make_interval(secs => $2)
)
SELECT now() AS at, w.n AS sent,
       -- none in the window (stalled): one pass over this issue's rows. OFFSET 0 keeps max()
       -- from becoming a walk down the updated_at index, which would read every newer row
       -- of every other job first (115 ms for a 100,000 issue quiet for 2 h).
       coalesce(w.last, (SELECT max(s.updated_at) FROM (SELECT updated_at FROM deliveries
                          WHERE job_id = $1 AND status IN ('sent', 'captured') OFFSET 0) s))
           AS last_sent,
       CASE WHEN $3 THEN (SELECT min(not_before) FROM deliveries
                           WHERE job_id = $1 AND status = 'retrying') END AS next_retry,
       (SELECT count(*) FROM workers WHERE stopped_at IS NULL
           AND heartbeat_at >= now() - gone_after)::int AS alive
  FROM window_sent w
"""


def _shown_subject(subjects: object, default_locale: str | None) -> str:
    if isinstance(subjects, str):
        return subjects
    if not isinstance(subjects, dict):
        return ""
    if default_locale is not None and isinstance(subjects.get(default_locale), str):
        return str(subjects[default_locale])
    return next((one for one in subjects.values() if isinstance(one, str)), "")


class Issues:
    def __init__(
        self, pool: asyncpg.Pool, default_locales: Mapping[str, str] | None = None
    ) -> None:
        """`default_locales`: each list's (by slug), the locale of the subject shown."""
        self._pool = pool
        self._default_locales = dict(default_locales or {})

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
                started_events = [
                    await outbox.issue_event(conn, "issue.started", due["id"], {"total": total})
                ]
                await conn.execute(
                    "UPDATE issues SET state = CASE WHEN $2 = 0 THEN 'done' ELSE 'sending' END,"
                    " total = $2, started_at = now(),"
                    " finished_at = CASE WHEN $2 = 0 THEN now() END,"
                    " final_counts = CASE WHEN $2 = 0 THEN '{}'::jsonb END WHERE id = $1",
                    due["id"],
                    total,
                )
                if total == 0:  # nobody to send to: done as it starts
                    started_events += await outbox.issues_finished(conn, [due["id"]])
                await outbox.append(conn, started_events)
                await conn.execute(
                    "SELECT pg_notify($1, $2)", ISSUES_CHANNEL, f"{due['id']}:sending"
                )
            started.append((due["id"], total))

    async def sending(self) -> list[ActiveIssue]:
        rows = await fetch(
            self._pool,
            "active issues",
            "SELECT id, list_id FROM issues WHERE state = 'sending' ORDER BY created_at",
        )
        return [ActiveIssue(r["id"], r["list_id"]) for r in rows]

    async def payload(self, issue_id: UUID) -> dict[str, Any]:
        """The job an issue was made from, as accepted."""
        text: str = await fetchval(
            self._pool, "issue payload", "SELECT payload FROM issues WHERE id = $1", issue_id
        )
        loaded: dict[str, Any] = json.loads(text)
        return loaded

    async def complete(self, issue_ids: Sequence[UUID]) -> list[UUID]:
        async with transaction(self._pool, "complete") as conn:
            rows = await conn.fetch("SELECT issues_done($1) AS id", list(issue_ids))
            done = [r["id"] for r in rows]
            await outbox.append(conn, await outbox.issues_finished(conn, done))
        return done

    async def set_state(
        self, issue_id: UUID, action: IssueAction, reason: str = "paused by an operator"
    ) -> tuple[IssueState | None, IssueState | None]:
        """(state before, state after); after is None when the action does not apply.
        `reason`: why, for the issue.paused event of a pause."""
        sources, target = TRANSITIONS[action]
        async with transaction(self._pool, action) as conn:
            row = await conn.fetchrow(
                "SELECT state, started_at FROM issues WHERE id = $1 FOR UPDATE", issue_id
            )
            if row is None:
                return None, None
            before: IssueState = row["state"]
            if before not in sources:
                return before, None
            if action == "resume" and row["started_at"] is None:
                target = "scheduled"  # paused before it started: wait for send_at again
            await conn.execute("UPDATE issues SET state = $2 WHERE id = $1", issue_id, target)
            if target == "paused":
                await outbox.append(
                    conn,
                    [await outbox.issue_event(conn, "issue.paused", issue_id, {"reason": reason})],
                )
            if target == "cancelled":
                await cancel_waiting(conn, issue_id)
                await conn.execute("UPDATE issues SET finished_at = now() WHERE id = $1", issue_id)
                # Its final counts, unless messages in flight are still to be recorded.
                await conn.execute("SELECT issues_done($1)", [issue_id])
                await outbox.append(
                    conn,
                    [
                        await outbox.issue_event(
                            conn, "issue.finished", issue_id, {"state": "cancelled"}
                        )
                    ],
                )
            await conn.execute("SELECT pg_notify($1, $2)", ISSUES_CHANNEL, f"{issue_id}:{target}")
        return before, target

    # ------------------------------------------------------------------ how issues are read

    def _summary(self, row: asyncpg.Record) -> IssueSummary:
        subjects = json.loads(row["subject"]) if row["subject"] is not None else ""
        return from_row(
            IssueSummary,
            row,
            list_slug=row["slug"],
            subject=_shown_subject(subjects, self._default_locales.get(row["slug"])),
            subjects=subjects,
            counts=json.loads(row["counts"]),
            last_sent_at=row["last_sent_at"] if row["final"] else None,
        )

    async def _summaries(self, query: str, *args: object) -> list[IssueSummary]:
        rows = await fetch(self._pool, "issues", query, *args)
        # Cancelled with messages in flight that were later handed back rather than
        # recorded (their worker stopped): counted this once, stored for the next time.
        unstored = [r["id"] for r in rows if r["state"] == "cancelled" and not r["final"]]
        if unstored:
            await execute(self._pool, "issues", "SELECT issues_done($1)", unstored)
        return [self._summary(row) for row in rows]

    async def newest(
        self, *, limit: int | None = 50, states: Sequence[IssueState] | None = None
    ) -> list[IssueSummary]:
        """Issues newest first (those in `states`, if given; all of them without a `limit`),
        with their counts by status."""
        return await self._summaries(_NEWEST, limit, list(states) if states is not None else None)

    async def summary(self, issue_id: UUID) -> IssueSummary | None:
        found = await self._summaries(_ONE, issue_id)
        return found[0] if found else None

    async def facts(self, issue: IssueSummary, *, newest_send: bool = False) -> LedgerFacts:
        """What the issue's rate and ETA are estimated from. Read from the ledger only for an
        issue sending, and, with `newest_send`, for one that started and is not finished
        (for the time of its newest send); the rest have no rate to tell, and a finished
        issue's newest send is stored."""
        if issue.final or not (
            issue.state == "sending" or (newest_send and issue.started_at is not None)
        ):
            return LedgerFacts(
                state=issue.state,
                total=issue.total,
                counts=issue.counts,
                measured_at=issue.measured_at,
                started_at=issue.started_at,
                finished_at=issue.finished_at,
                sent_in_window=0,
                last_sent_at=issue.last_sent_at,
                next_retry_at=None,
                workers_alive=None,
            )
        counts = issue.counts
        only_retries = (
            counts.get("retrying", 0) > 0
            and counts.get("pending", 0) == 0
            and counts.get("sending", 0) == 0
        )
        row = await fetchrow(self._pool, "issue rate", _FACTS, issue.id, RATE_WINDOW, only_retries)
        assert row is not None
        return LedgerFacts(
            state=issue.state,
            total=issue.total,
            counts=counts,
            measured_at=row["at"],
            started_at=issue.started_at,
            finished_at=issue.finished_at,
            sent_in_window=row["sent"],
            last_sent_at=row["last_sent"],
            next_retry_at=row["next_retry"],
            workers_alive=row["alive"],
        )

    async def progress(self, issue_id: UUID) -> Progress | None:
        """One issue with its rate and ETA: `mailer issue status`."""
        issue = await self.summary(issue_id)
        if issue is None:
            return None
        return Progress(issue, await self.facts(issue, newest_send=True))

    async def active(self) -> list[Progress]:
        """Every issue sending or paused, with its progress: what the metrics follow."""
        return [
            Progress(issue, await self.facts(issue, newest_send=True))
            for issue in reversed(await self.newest(limit=None, states=UNDER_WAY))
        ]
