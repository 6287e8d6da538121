"""Bounce reports in PostgreSQL: the raw report stored before the receiver answers 250, its
classification applied once, in one transaction, and what operators read. The one writer of
the `bounce_reports` table.

A report is classified under a row lock and marked classified in the same transaction as
everything it changes, so a report classified twice (two workers, a crash and a retry)
changes nothing the second time. What it changes is written by each table's owner, in that
transaction: the delivery by mailer/adapters/deliveries.py, the suppression list by
mailer/adapters/suppressions.py, a complainer's subscriptions by
mailer/adapters/subscribers.py (its one unsubscribe).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from mailer.adapters import outbox, suppressions
from mailer.adapters.database import execute, fetch, fetchrow, fetchval, from_row, transaction
from mailer.adapters.deliveries import record_bounce
from mailer.adapters.subscribers import unsubscribe


@dataclass(frozen=True, slots=True)
class PendingReport:
    """A stored report not yet classified, with the delivery its return path names."""

    id: int
    raw: bytes
    delivery_id: int | None  # None: mail to postmaster@ that names no delivery of ours
    recipient_key: bytes | None  # None: the delivery is gone (or there is none)
    delivery_status: str | None
    job_id: object | None
    subscriber_id: int | None


@dataclass(frozen=True, slots=True)
class Claim:
    """A report taken for classification: its bytes, and how often it was taken so far."""

    raw: bytes
    attempts: int


@dataclass(frozen=True, slots=True)
class StoredReport:
    id: int
    received_at: datetime
    peer: str
    delivery_id: int | None
    size: int
    kind: str | None
    reason: str | None
    status: str | None
    diagnostic: str | None
    domain: str | None
    outcome: str | None
    classified_at: datetime | None
    evidence: str | None  # what decided its kind: a field or a phrase
    raw: bytes | None


_REPORT_COLUMNS = (
    "id, received_at, peer, delivery_id, size, kind, reason, status, diagnostic, domain,"
    " outcome, classified_at, evidence"
)


def _report(row: asyncpg.Record, *, with_raw: bool = False) -> StoredReport:
    return from_row(StoredReport, row, raw=row["raw"] if with_raw else None)


class Classification:
    """One report being classified: the writes it makes, in its transaction."""

    def __init__(self, conn: asyncpg.Connection, pending: PendingReport) -> None:
        self._conn = conn
        self.pending = pending
        self.unsubscribed = 0  # subscriptions a complaint ended, counted once committed

    async def bounce(
        self, kind: str, status: str | None, diagnostic: str | None, reason: str
    ) -> str | None:
        """The delivery recorded bounced (kind: hard, soft or policy): None. When it was not
        (it had bounced already, or was never sent), the status it has now: read after the
        write was refused, not when the report was taken, since another report about the
        same delivery may have bounced it meanwhile."""
        delivery_id = self.pending.delivery_id
        assert delivery_id is not None
        written = await record_bounce(
            self._conn, delivery_id, kind=kind, status=status, diagnostic=diagnostic, reason=reason
        )
        if written:
            return None
        now: str | None = await self._conn.fetchval(
            "SELECT status FROM deliveries WHERE id = $1", delivery_id
        )
        return now or "gone"

    def _recipient(self) -> bytes:
        key = self.pending.recipient_key
        assert key is not None  # only a report about a delivery of ours changes anything
        return key

    async def suppress_hard(self, reason: str) -> None:
        """For everything, at once; it outranks a soft bounce's suppression."""
        await suppressions.suppress_hard(self._conn, self._recipient(), reason, self.pending.id)

    async def soft_point(self, day: date, *, keep_days: int) -> list[date]:
        """The day's point (one a day however many bounces); returns the address's bounce
        days within the last `keep_days`."""
        return await suppressions.soft_point(
            self._conn, self._recipient(), day, keep_days=keep_days
        )

    async def suppress_soft(self, until: date, reason: str) -> None:
        """Newsletters only, until `until`; never downgrades another suppression."""
        await suppressions.suppress_soft(
            self._conn, self._recipient(), until, reason, self.pending.id
        )

    async def complained(self, reason: str) -> None:
        """A complaint about the delivery: its message.complained event."""
        delivery_id = self.pending.delivery_id
        assert delivery_id is not None
        complained = await outbox.delivery_event(
            self._conn, "message.complained", delivery_id, {"reason": reason}
        )
        await outbox.append(self._conn, [complained] if complained is not None else [])

    async def unsubscribe_everywhere(self) -> int:
        """A complaint: the person leaves every list at once, as any unsubscribe does.
        Returns the lists left."""
        subscriber_id: int | None = self.pending.subscriber_id
        if subscriber_id is None:
            subscriber_id = await self._conn.fetchval(
                "SELECT id FROM subscribers WHERE address_key = $1", self.pending.recipient_key
            )
        if subscriber_id is None:
            return 0
        before = await unsubscribe(self._conn, subscriber_id, "complaint")
        self.unsubscribed = sum(1 for status in before.values() if status != "unsubscribed")
        return self.unsubscribed

    async def done(
        self,
        *,
        kind: str,
        reason: str,
        status: str | None,
        diagnostic: str | None,
        domain: str | None,
        outcome: str,
        evidence: str | None = None,
    ) -> None:
        """The report's classification, the evidence that decided it and what it changed,
        committed with the writes."""
        await self._conn.execute(
            "UPDATE bounce_reports SET kind = $2, reason = $3, status = $4, diagnostic = $5,"
            " domain = $6, outcome = $7, evidence = $8, classified_at = now() WHERE id = $1",
            self.pending.id,
            kind,
            reason[:1000],
            status,
            diagnostic,
            domain,
            outcome[:1000],
            evidence[:1000] if evidence else None,
        )


class BounceReports:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def store(self, *, peer: str, delivery_id: int | None, raw: bytes) -> int:
        """Commit a raw report; its id. TemporaryFailure when the database cannot take it."""
        report_id: int = await fetchval(
            self._pool,
            "store bounce report",
            "INSERT INTO bounce_reports (peer, delivery_id, size, raw)"
            " VALUES ($1, $2, $3, $4) RETURNING id",
            peer[:64],
            delivery_id,
            len(raw),
            raw,
        )
        return report_id

    async def unclassified(self, limit: int = 100) -> list[int]:
        """Reports not classified and not claimed by a live classification."""
        rows = await fetch(
            self._pool,
            "unclassified reports",
            "SELECT id FROM bounce_reports WHERE classified_at IS NULL AND raw IS NOT NULL"
            "   AND (claimed_until IS NULL OR claimed_until < now()) ORDER BY id LIMIT $1",
            limit,
        )
        return [row["id"] for row in rows]

    async def delivery_status(self, report_id: int) -> str | None:
        """The status of the delivery an unclassified report names ('-' without one); None
        when the report is classified already."""
        row = await fetchrow(
            self._pool,
            "bounce report's delivery",
            "SELECT coalesce(d.status, '-') AS status FROM bounce_reports r"
            " LEFT JOIN deliveries d ON d.id = r.delivery_id"
            " WHERE r.id = $1 AND r.classified_at IS NULL AND r.raw IS NOT NULL",
            report_id,
        )
        return None if row is None else str(row["status"])

    async def claim(self, report_id: int, *, seconds: float) -> Claim | None:
        """The report taken for `seconds` and counted; None when it is classified already or
        another classification holds it."""
        row = await fetchrow(
            self._pool,
            "claim bounce report",
            "UPDATE bounce_reports SET attempts = attempts + 1,"
            "       claimed_until = now() + make_interval(secs => $2)"
            " WHERE id = $1 AND classified_at IS NULL AND raw IS NOT NULL"
            "   AND (claimed_until IS NULL OR claimed_until < now())"
            " RETURNING raw, attempts",
            report_id,
            seconds,
        )
        return None if row is None else Claim(row["raw"], row["attempts"])

    async def release(self, report_id: int, *, attempt_counts: bool = False) -> None:
        """A claim handed back: unused (its delivery was being sent again), or cut off by a
        stop (`attempt_counts`)."""
        await execute(
            self._pool,
            "release bounce report",
            "UPDATE bounce_reports SET claimed_until = NULL,"
            "       attempts = CASE WHEN $2 THEN attempts ELSE greatest(attempts - 1, 0) END"
            " WHERE id = $1 AND classified_at IS NULL",
            report_id,
            attempt_counts,
        )

    async def give_up(self, report_id: int, reason: str) -> None:
        await execute(
            self._pool,
            "give up on a bounce report",
            "UPDATE bounce_reports SET kind = 'unparseable', reason = $2,"
            " outcome = 'nothing', classified_at = now()"
            " WHERE id = $1 AND classified_at IS NULL",
            report_id,
            reason[:1000],
        )

    @contextlib.asynccontextmanager
    async def classifying(self, report_id: int) -> AsyncIterator[Classification | None]:
        """The report locked for classification, None when it is classified already (or
        another process holds it); everything written through it commits together with
        `done()`."""
        async with transaction(self._pool, "classify bounce report") as conn:
            row = await conn.fetchrow(
                "SELECT r.id, r.raw, r.delivery_id, d.recipient_key, d.status, d.job_id,"
                "       d.subscriber_id"
                "  FROM bounce_reports r LEFT JOIN deliveries d ON d.id = r.delivery_id"
                " WHERE r.id = $1 AND r.classified_at IS NULL AND r.raw IS NOT NULL"
                "   FOR UPDATE OF r SKIP LOCKED",
                report_id,
            )
            if row is None:
                yield None
                return
            yield Classification(
                conn,
                from_row(PendingReport, row, delivery_status=row["status"]),
            )

    async def complaint_rate(self, job_id: object) -> tuple[int, int] | None:
        """(complaints, deliveries) of a newsletter issue; None for a receipt."""
        row = await fetchrow(
            self._pool,
            "complaint rate",
            "SELECT i.total,"
            "  (SELECT count(DISTINCT r.delivery_id) FROM bounce_reports r"
            "     JOIN deliveries d ON d.id = r.delivery_id"
            "    WHERE d.job_id = i.id AND r.kind = 'complaint') AS complaints"
            " FROM issues i WHERE i.id = $1",
            job_id,
        )
        if row is None or not row["total"]:
            return None
        return row["complaints"], row["total"]

    async def sweep(self, *, retention_days: int, keep_soft_days: int) -> tuple[int, int]:
        """Delete raw reports past the retention, lapsed soft-bounce suppressions and
        bounce days too old to count; returns (reports emptied, suppressions lifted)."""
        async with transaction(self._pool, "bounce retention") as conn:
            emptied: str = await conn.execute(
                "UPDATE bounce_reports SET raw = NULL"
                " WHERE raw IS NOT NULL AND received_at < now() - make_interval(days => $1)",
                retention_days,
            )
            lifted = await suppressions.lift_lapsed(conn, keep_soft_days=keep_soft_days)
        return int(emptied.rsplit(" ", 1)[1]), lifted

    # ------------------------------------------------------------ what operators read

    async def latest(
        self, *, kind: str | None = None, delivery_id: int | None = None, limit: int = 50
    ) -> list[StoredReport]:
        rows = await fetch(
            self._pool,
            "list bounce reports",
            f"SELECT {_REPORT_COLUMNS} FROM bounce_reports"
            " WHERE ($1::text IS NULL OR kind = $1)"
            "   AND ($2::bigint IS NULL OR delivery_id = $2)"
            " ORDER BY id DESC LIMIT $3",
            kind,
            delivery_id,
            limit,
        )
        return [_report(row) for row in rows]

    async def show(self, report_id: int) -> StoredReport | None:
        row = await fetchrow(
            self._pool,
            "show bounce report",
            f"SELECT {_REPORT_COLUMNS}, raw FROM bounce_reports WHERE id = $1",
            report_id,
        )
        return _report(row, with_raw=True) if row is not None else None

    async def counts(self, *, days: int) -> list[tuple[str, str, int]]:
        """(kind, destination domain or '-', reports) over the last `days`."""
        rows = await fetch(
            self._pool,
            "bounce counts",
            "SELECT coalesce(kind, 'unclassified') AS kind, coalesce(domain, '-') AS domain,"
            "       count(*) AS n FROM bounce_reports"
            " WHERE received_at > now() - make_interval(days => $1)"
            " GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
            days,
        )
        return [(row["kind"], row["domain"], row["n"]) for row in rows]

    async def issue_rates(self, *, limit: int = 20) -> list[tuple[object, int, int, int]]:
        """(issue id, deliveries, bounced, complaints) of the latest issues."""
        rows = await fetch(
            self._pool,
            "issue bounce rates",
            "SELECT i.id, coalesce(i.total, 0) AS total,"
            "  (SELECT count(*) FROM deliveries d WHERE d.job_id = i.id"
            "     AND d.status = 'bounced') AS bounced,"
            "  (SELECT count(DISTINCT r.delivery_id) FROM bounce_reports r"
            "     JOIN deliveries d ON d.id = r.delivery_id"
            "    WHERE d.job_id = i.id AND r.kind = 'complaint') AS complaints"
            " FROM issues i ORDER BY i.created_at DESC LIMIT $1",
            limit,
        )
        return [(row["id"], row["total"], row["bounced"], row["complaints"]) for row in rows]
