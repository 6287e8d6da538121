"""Bounce reports and suppressions in PostgreSQL: the raw report stored before the receiver
answers 250, its classification applied once, in one transaction, and what operators read.

A report is classified under a row lock and marked classified in the same transaction as
everything it changes, so a report classified twice (two workers, a crash and a retry)
changes nothing the second time. The delivery row itself is written by
`deliveries.record_bounce`, its one owner.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import asyncpg

from mailer.adapters.database import transaction, unavailable_is_temporary
from mailer.adapters.deliveries import record_bounce
from mailer.adapters.subscribers import OPTOUT_CHANNEL


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


@dataclass(frozen=True, slots=True)
class Suppression:
    address_key: bytes
    reason: str
    detail: str | None
    created_at: datetime
    expires_at: datetime | None
    report_id: int | None


_REPORT_COLUMNS = (
    "id, received_at, peer, delivery_id, size, kind, reason, status, diagnostic, domain,"
    " outcome, classified_at, evidence"
)


def _report(row: asyncpg.Record, *, with_raw: bool = False) -> StoredReport:
    return StoredReport(
        **{key: row[key] for key in _REPORT_COLUMNS.replace(" ", "").split(",")},
        raw=row["raw"] if with_raw else None,
    )


def _suppression(row: asyncpg.Record) -> Suppression:
    return Suppression(
        row["address_key"],
        row["reason"],
        row["detail"],
        row["created_at"],
        row["expires_at"],
        row["report_id"],
    )


class Classification:
    """One report being classified: the writes it makes, in its transaction."""

    def __init__(self, conn: asyncpg.Connection, pending: PendingReport) -> None:
        self._conn = conn
        self.pending = pending

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

    async def suppress_hard(self, reason: str) -> None:
        """For everything, at once; it outranks a soft bounce's suppression."""
        await self._conn.execute(
            "INSERT INTO suppressions (address_key, reason, detail, report_id)"
            " VALUES ($1, 'hard_bounce', $2, $3)"
            " ON CONFLICT (address_key) DO UPDATE"
            "   SET reason = 'hard_bounce', detail = excluded.detail, expires_at = NULL,"
            "       report_id = excluded.report_id, created_at = now()"
            " WHERE suppressions.reason = 'soft_bounce'",
            self.pending.recipient_key,
            reason[:1000],
            self.pending.id,
        )

    async def soft_point(self, day: date, *, keep_days: int) -> list[date]:
        """The day's point (one a day however many bounces); returns the address's bounce
        days within the last `keep_days`."""
        await self._conn.execute(
            "INSERT INTO soft_bounce_days (address_key, day) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING",
            self.pending.recipient_key,
            day,
        )
        rows = await self._conn.fetch(
            "SELECT day FROM soft_bounce_days WHERE address_key = $1 AND day > $2 ORDER BY day",
            self.pending.recipient_key,
            day - timedelta(days=keep_days),
        )
        return [row["day"] for row in rows]

    async def suppress_soft(self, until: date, reason: str) -> None:
        """Newsletters only, until `until`; never downgrades another suppression."""
        await self._conn.execute(
            "INSERT INTO suppressions (address_key, reason, detail, report_id, expires_at)"
            " VALUES ($1, 'soft_bounce', $2, $3, $4)"
            " ON CONFLICT (address_key) DO UPDATE"
            "   SET detail = excluded.detail, report_id = excluded.report_id,"
            "       expires_at = greatest(suppressions.expires_at, excluded.expires_at)"
            " WHERE suppressions.reason = 'soft_bounce'",
            self.pending.recipient_key,
            reason[:1000],
            self.pending.id,
            datetime.combine(until, time(), tzinfo=UTC),
        )

    async def unsubscribe_everywhere(self) -> int:
        """A complaint: the person leaves every list at once. Returns the lists left."""
        subscriber_id: int | None = self.pending.subscriber_id
        if subscriber_id is None:
            subscriber_id = await self._conn.fetchval(
                "SELECT id FROM subscribers WHERE address_key = $1", self.pending.recipient_key
            )
        if subscriber_id is None:
            return 0
        result: str = await self._conn.execute(
            "UPDATE subscriptions SET status = 'unsubscribed', source = 'complaint',"
            " changed_at = now() WHERE subscriber_id = $1 AND status <> 'unsubscribed'",
            subscriber_id,
        )
        await self._conn.execute("SELECT pg_notify($1, $2)", OPTOUT_CHANNEL, f"{subscriber_id}:*")
        return int(result.rsplit(" ", 1)[1])

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
        async with unavailable_is_temporary("store bounce report"):
            report_id: int = await self._pool.fetchval(
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
        async with unavailable_is_temporary("unclassified reports"):
            rows = await self._pool.fetch(
                "SELECT id FROM bounce_reports WHERE classified_at IS NULL AND raw IS NOT NULL"
                "   AND (claimed_until IS NULL OR claimed_until < now()) ORDER BY id LIMIT $1",
                limit,
            )
        return [row["id"] for row in rows]

    async def delivery_status(self, report_id: int) -> str | None:
        """The status of the delivery an unclassified report names ('-' without one); None
        when the report is classified already."""
        async with unavailable_is_temporary("bounce report's delivery"):
            row = await self._pool.fetchrow(
                "SELECT coalesce(d.status, '-') AS status FROM bounce_reports r"
                " LEFT JOIN deliveries d ON d.id = r.delivery_id"
                " WHERE r.id = $1 AND r.classified_at IS NULL AND r.raw IS NOT NULL",
                report_id,
            )
        return None if row is None else str(row["status"])

    async def claim(self, report_id: int, *, seconds: float) -> Claim | None:
        """The report taken for `seconds` and counted; None when it is classified already or
        another classification holds it."""
        async with unavailable_is_temporary("claim bounce report"):
            row = await self._pool.fetchrow(
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
        async with unavailable_is_temporary("release bounce report"):
            await self._pool.execute(
                "UPDATE bounce_reports SET claimed_until = NULL,"
                "       attempts = CASE WHEN $2 THEN attempts ELSE greatest(attempts - 1, 0) END"
                " WHERE id = $1 AND classified_at IS NULL",
                report_id,
                attempt_counts,
            )

    async def give_up(self, report_id: int, reason: str) -> None:
        async with unavailable_is_temporary("give up on a bounce report"):
            await self._pool.execute(
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
                PendingReport(
                    row["id"],
                    row["raw"],
                    row["delivery_id"],
                    row["recipient_key"],
                    row["status"],
                    row["job_id"],
                    row["subscriber_id"],
                ),
            )

    async def complaint_rate(self, job_id: object) -> tuple[int, int] | None:
        """(complaints, deliveries) of a newsletter issue; None for a receipt."""
        async with unavailable_is_temporary("complaint rate"):
            row = await self._pool.fetchrow(
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
            lifted: str = await conn.execute(
                "DELETE FROM suppressions WHERE expires_at IS NOT NULL AND expires_at <= now()"
            )
            await conn.execute(
                "DELETE FROM soft_bounce_days WHERE day < current_date - $1::integer",
                keep_soft_days,
            )
        return int(emptied.rsplit(" ", 1)[1]), int(lifted.rsplit(" ", 1)[1])

    # ------------------------------------------------------------ what operators read

    async def latest(
        self, *, kind: str | None = None, delivery_id: int | None = None, limit: int = 50
    ) -> list[StoredReport]:
        async with unavailable_is_temporary("list bounce reports"):
            rows = await self._pool.fetch(
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
        async with unavailable_is_temporary("show bounce report"):
            row = await self._pool.fetchrow(
                f"SELECT {_REPORT_COLUMNS}, raw FROM bounce_reports WHERE id = $1", report_id
            )
        return _report(row, with_raw=True) if row is not None else None

    async def counts(self, *, days: int) -> list[tuple[str, str, int]]:
        """(kind, destination domain or '-', reports) over the last `days`."""
        async with unavailable_is_temporary("bounce counts"):
            rows = await self._pool.fetch(
                "SELECT coalesce(kind, 'unclassified') AS kind, coalesce(domain, '-') AS domain,"
                "       count(*) AS n FROM bounce_reports"
                " WHERE received_at > now() - make_interval(days => $1)"
                " GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
                days,
            )
        return [(row["kind"], row["domain"], row["n"]) for row in rows]

    async def issue_rates(self, *, limit: int = 20) -> list[tuple[object, int, int, int]]:
        """(issue id, deliveries, bounced, complaints) of the latest issues."""
        async with unavailable_is_temporary("issue bounce rates"):
            rows = await self._pool.fetch(
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


# What an operator may add by hand: every reason the schema allows but an erasure, which
# only a person's erasure request makes, together with forgetting them (and never lifted).
OPERATOR_REASONS = ("manual", "hard_bounce", "complaint", "soft_bounce")


class Suppressions:
    """The suppression list, as operators see and change it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def active(self, *, reason: str | None = None, limit: int = 100) -> list[Suppression]:
        async with unavailable_is_temporary("list suppressions"):
            rows = await self._pool.fetch(
                "SELECT * FROM suppressions WHERE ($1::text IS NULL OR reason = $1)"
                "   AND (expires_at IS NULL OR expires_at > now())"
                " ORDER BY created_at DESC LIMIT $2",
                reason,
                limit,
            )
        return [_suppression(row) for row in rows]

    async def show(self, address_key: bytes) -> Suppression | None:
        async with unavailable_is_temporary("show suppression"):
            row = await self._pool.fetchrow(
                "SELECT * FROM suppressions WHERE address_key = $1", address_key
            )
        return _suppression(row) if row is not None else None

    async def find(self, prefix: bytes) -> Sequence[Suppression]:
        """By the first bytes of the keyed hash, as logs and lists show it (`#1a2b3c4d`)."""
        async with unavailable_is_temporary("find suppression"):
            rows = await self._pool.fetch(
                "SELECT * FROM suppressions WHERE substring(address_key FROM 1 FOR $2) = $1"
                " LIMIT 2",
                prefix,
                len(prefix),
            )
        return [_suppression(row) for row in rows]

    async def lift(self, address_key: bytes) -> str | None:
        """Remove a bounce, complaint or operator suppression and the address's bounce days;
        an erasure stays (the person asked never to be mailed). The reason lifted, or None."""
        async with transaction(self._pool, "lift suppression") as conn:
            reason: str | None = await conn.fetchval(
                "DELETE FROM suppressions WHERE address_key = $1 AND reason <> 'erased'"
                " RETURNING reason",
                address_key,
            )
            await conn.execute("DELETE FROM soft_bounce_days WHERE address_key = $1", address_key)
        return reason

    async def add(
        self,
        address_key: bytes,
        detail: str,
        *,
        reason: str = "manual",
        expires_at: datetime | None = None,
    ) -> bool:
        """An operator's suppression (for everything; a soft bounce's for newsletters, until
        it expires); False when one is there already."""
        if reason not in OPERATOR_REASONS:
            raise ValueError(f"reason: one of {', '.join(OPERATOR_REASONS)}")
        async with unavailable_is_temporary("add suppression"):
            added: int | None = await self._pool.fetchval(
                "INSERT INTO suppressions (address_key, reason, detail, expires_at)"
                " VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (address_key) DO NOTHING RETURNING 1",
                address_key,
                reason,
                detail[:1000],
                expires_at,
            )
        return added is not None
