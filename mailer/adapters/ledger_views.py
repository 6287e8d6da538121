"""What the operators' console reads from the ledger: read-only queries, each answer with the
database's own time of measurement. Issues themselves, with their counts and what their rate
and ETA are estimated from, are read as everywhere else, from mailer/adapters/issues.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import get_args
from uuid import UUID

import asyncpg

from mailer.adapters.database import fetch, fetchval, from_row
from mailer.core.deliveries import OUTCOMES, DeliveryStatus
from mailer.core.jobs import Transactional

RECORDED = (*OUTCOMES, DeliveryStatus.RETRYING)  # what an attempt records: the chart counts these
TRANSACTIONAL: tuple[Transactional, ...] = get_args(Transactional)  # sent one at a time


@dataclass(frozen=True, slots=True)
class MinuteCount:
    minute: datetime
    kind: str
    status: str
    count: int


@dataclass(frozen=True, slots=True)
class DomainRow:
    domain: str
    counts: dict[str, int]
    rate: float | None  # configured messages per second, None: not limited
    factor: float | None  # below 1 while the domain is slowed down after 4xx
    concurrency: int | None


@dataclass(frozen=True, slots=True)
class FailureRow:
    delivery_id: int
    domain: str | None
    status: str
    attempts: int
    reply: str | None
    detail: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class ReceiptRow:
    delivery_id: int
    kind: str  # receipt or confirmation (of a subscription)
    job_id: UUID
    status: str
    attempts: int
    reply: str | None
    detail: str | None
    created_at: datetime
    updated_at: datetime
    next_attempt: datetime | None


@dataclass(frozen=True, slots=True)
class ListCounts:
    slug: str
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class ListStanding:
    """One person's subscription to one list."""

    slug: str
    status: str  # pending, subscribed or unsubscribed
    since: datetime
    source: str  # what made it so: portal, import, confirmation link, page, one-click


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """One message to one person, of any kind."""

    delivery_id: int
    kind: str
    job_id: UUID
    status: str
    attempts: int
    updated_at: datetime
    detail: str | None


class LedgerViews:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def now(self) -> datetime:
        at: datetime = await fetchval(self._pool, "clock", "SELECT clock_timestamp()")
        return at

    async def sends_per_minute(
        self, minutes: int = 60, *, since: datetime | None = None
    ) -> list[MinuteCount]:
        """Outcomes recorded per minute, by job kind, over the last `minutes` (from `since`
        on, when given)."""
        rows = await fetch(
            self._pool,
            "sends per minute",
            "SELECT date_trunc('minute', d.updated_at) AS minute, j.kind, d.status,"
            " count(*) AS n FROM deliveries d JOIN jobs j ON j.id = d.job_id"
            " WHERE d.updated_at >= coalesce($3, now() - make_interval(mins => $1))"
            " AND d.status = ANY($2) GROUP BY 1, 2, 3 ORDER BY 1",
            minutes,
            list(RECORDED),
            since,
        )
        return [MinuteCount(r["minute"], r["kind"], r["status"], r["n"]) for r in rows]

    async def domains(self, issue_id: UUID, limit: int = 50) -> list[DomainRow]:
        """Outcomes by recipient domain (largest first) and each domain's throttle."""
        rows = await fetch(
            self._pool,
            "domains",
            "WITH d AS (SELECT lower(split_part(s.email, '@', 2)) AS domain, d.status"
            "   FROM deliveries d LEFT JOIN subscribers s ON s.id = d.subscriber_id"
            "   WHERE d.job_id = $1),"
            " top AS (SELECT domain, count(*) AS n FROM d GROUP BY domain"
            "   ORDER BY n DESC LIMIT $2)"
            " SELECT d.domain, d.status, count(*) AS n, t.rate, t.factor, t.concurrency"
            " FROM d JOIN top USING (domain) LEFT JOIN throttle t ON t.key = d.domain"
            " GROUP BY d.domain, d.status, t.rate, t.factor, t.concurrency, top.n"
            " ORDER BY top.n DESC, d.domain",
            issue_id,
            limit,
        )
        found: dict[str, DomainRow] = {}
        for r in rows:
            domain = r["domain"] or "(erased)"
            row = found.setdefault(
                domain,
                DomainRow(
                    domain,
                    {},
                    r["rate"] if r["rate"] else None,
                    r["factor"],
                    r["concurrency"],
                ),
            )
            row.counts[r["status"]] = r["n"]
        return list(found.values())

    async def failures(self, job_id: UUID, limit: int = 50) -> list[FailureRow]:
        rows = await fetch(
            self._pool,
            "failures",
            "SELECT d.id AS delivery_id, lower(split_part(s.email, '@', 2)) AS domain, d.status,"
            " d.attempts, d.reply, d.detail, d.updated_at AS at FROM deliveries d"
            " LEFT JOIN subscribers s ON s.id = d.subscriber_id"
            " WHERE d.job_id = $1 AND d.status IN ('failed', 'retrying')"
            " ORDER BY d.updated_at DESC LIMIT $2",
            job_id,
            limit,
        )
        return [from_row(FailureRow, r) for r in rows]

    async def receipts(
        self,
        *,
        status: str | None = None,
        job_id: UUID | None = None,
        recipient_key: bytes | None = None,
        limit: int = 50,
    ) -> list[ReceiptRow]:
        """Deliveries of receipts and confirmations, newest first, filtered by any of the
        given."""
        rows = await fetch(
            self._pool,
            "receipts",
            "SELECT d.id AS delivery_id, j.kind, d.job_id, d.status, d.attempts, d.reply,"
            " d.detail, d.created_at, d.updated_at, d.not_before AS next_attempt"
            " FROM deliveries d JOIN jobs j ON j.id = d.job_id"
            " WHERE j.kind = ANY($5) AND ($1::text IS NULL OR d.status = $1)"
            " AND ($2::uuid IS NULL OR d.job_id = $2)"
            " AND ($3::bytea IS NULL OR d.recipient_key = $3)"
            " ORDER BY d.updated_at DESC LIMIT $4",
            status,
            job_id,
            recipient_key,
            limit,
            list(TRANSACTIONAL),
        )
        return [from_row(ReceiptRow, r) for r in rows]

    async def receipt_counts(self, hours: int = 24) -> dict[str, dict[str, int]]:
        """Receipts and confirmations by status over the last `hours`, per kind."""
        rows = await fetch(
            self._pool,
            "receipt counts",
            "SELECT j.kind, d.status, count(*) AS n FROM deliveries d"
            " JOIN jobs j ON j.id = d.job_id"
            " WHERE j.kind = ANY($2) AND d.updated_at > now() - make_interval(hours => $1)"
            " GROUP BY j.kind, d.status",
            hours,
            list(TRANSACTIONAL),
        )
        found: dict[str, dict[str, int]] = {}
        for r in rows:
            found.setdefault(r["kind"], {})[r["status"]] = r["n"]
        return {kind: found[kind] for kind in TRANSACTIONAL if kind in found}

    async def lists(self) -> list[ListCounts]:
        rows = await fetch(
            self._pool,
            "lists",
            "SELECT l.slug, sub.status, count(sub.*) AS n FROM lists l"
            " LEFT JOIN subscriptions sub ON sub.list_id = l.id"
            " GROUP BY l.slug, sub.status ORDER BY l.slug",
        )
        found: dict[str, ListCounts] = {}
        for r in rows:
            entry = found.setdefault(r["slug"], ListCounts(r["slug"], {}))
            if r["status"] is not None:
                entry.counts[r["status"]] = r["n"]
        return list(found.values())

    async def subscriptions_of(self, address_key: bytes) -> list[ListStanding]:
        """The lists of the person with this address, with their status on each."""
        rows = await fetch(
            self._pool,
            "subscriptions",
            "SELECT l.slug, sub.status, sub.changed_at AS since, sub.source FROM subscribers s"
            " JOIN subscriptions sub ON sub.subscriber_id = s.id"
            " JOIN lists l ON l.id = sub.list_id WHERE s.address_key = $1 ORDER BY l.slug",
            address_key,
        )
        return [from_row(ListStanding, r) for r in rows]

    async def deliveries_to(self, address_key: bytes, limit: int = 10) -> list[DeliveryRow]:
        """The newest messages of any kind to the person with this address (by its keyed
        hash: erased people's too). No index leads with the recipient (one would make every
        write dearer), so this reads the ledger through: an operator's look-up, not a page
        that refreshes."""
        rows = await fetch(
            self._pool,
            "deliveries to",
            "SELECT d.id AS delivery_id, j.kind, d.job_id, d.status, d.attempts, d.updated_at,"
            " d.detail"
            " FROM deliveries d JOIN jobs j ON j.id = d.job_id"
            " WHERE d.recipient_key = $1 ORDER BY d.updated_at DESC LIMIT $2",
            address_key,
            limit,
        )
        return [from_row(DeliveryRow, r) for r in rows]
