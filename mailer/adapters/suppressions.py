"""The suppression list and the soft-bounce days that lead to a suppression: the one writer of
the `suppressions` and `soft_bounce_days` tables, with the SQL function of
`sql/suppressions.sql`.

Addresses are keyed hashes here. A suppression holds for everything (a hard bounce, a
complaint or an operator's), for newsletters until it expires (soft bounces), or keeps an
erased person from being mailed unasked. The functions taking a connection write in the
caller's transaction: a bounce report's classification, an erasure, a subscription;
`Suppressions` is what operators read and change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import asyncpg

from mailer.adapters.database import fetch, fetchrow, fetchval, from_row, transaction

# What an operator may add by hand: every reason the schema allows but an erasure, which
# only a person's erasure request makes, together with forgetting them (and never lifted).
OPERATOR_REASONS = ("manual", "hard_bounce", "complaint", "soft_bounce")


@dataclass(frozen=True, slots=True)
class Suppression:
    address_key: bytes
    reason: str
    detail: str | None
    created_at: datetime
    expires_at: datetime | None
    report_id: int | None


def _suppression(row: asyncpg.Record) -> Suppression:
    return from_row(Suppression, row)


async def suppress_hard(
    conn: asyncpg.Connection, address_key: bytes, detail: str, report_id: int
) -> None:
    """A hard bounce report: the address suppressed for everything, at once; it outranks a
    soft bounce's suppression (`suppress_hard_bounces`, as for the relay's own 5xx)."""
    await conn.execute(
        "SELECT suppress_hard_bounces($1::bytea[], $2::text[], $3)",
        [address_key],
        [detail[:1000]],
        report_id,
    )


async def soft_point(
    conn: asyncpg.Connection, address_key: bytes, day: date, *, keep_days: int
) -> list[date]:
    """A soft bounce's point for the day (one a day however many bounces); returns the
    address's bounce days within the last `keep_days`."""
    await conn.execute(
        "INSERT INTO soft_bounce_days (address_key, day) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        address_key,
        day,
    )
    rows = await conn.fetch(
        "SELECT day FROM soft_bounce_days WHERE address_key = $1 AND day > $2 ORDER BY day",
        address_key,
        day - timedelta(days=keep_days),
    )
    return [row["day"] for row in rows]


async def suppress_soft(
    conn: asyncpg.Connection, address_key: bytes, until: date, detail: str, report_id: int
) -> None:
    """Newsletters only, until `until`; never downgrades another suppression."""
    await conn.execute(
        "INSERT INTO suppressions (address_key, reason, detail, report_id, expires_at)"
        " VALUES ($1, 'soft_bounce', $2, $3, $4)"
        " ON CONFLICT (address_key) DO UPDATE"
        "   SET detail = excluded.detail, report_id = excluded.report_id,"
        "       expires_at = greatest(suppressions.expires_at, excluded.expires_at)"
        " WHERE suppressions.reason = 'soft_bounce'",
        address_key,
        detail[:1000],
        report_id,
        datetime.combine(until, time(), tzinfo=UTC),
    )


async def keep_erased(conn: asyncpg.Connection, address_key: bytes) -> None:
    """A person erased: only their keyed hash stays, so they are not mailed again unasked."""
    await conn.execute(
        "INSERT INTO suppressions (address_key, reason) VALUES ($1, 'erased')"
        " ON CONFLICT (address_key) DO NOTHING",
        address_key,
    )


async def forget_erasure(conn: asyncpg.Connection, address_key: bytes) -> None:
    """Someone erased asked to subscribe again: the erasure no longer holds."""
    await conn.execute(
        "DELETE FROM suppressions WHERE address_key = $1 AND reason = 'erased'", address_key
    )


async def lift_lapsed(conn: asyncpg.Connection, *, keep_soft_days: int) -> int:
    """Soft-bounce suppressions past their expiry, and bounce days too old to count, deleted;
    returns the suppressions lifted."""
    lifted: str = await conn.execute(
        "DELETE FROM suppressions WHERE expires_at IS NOT NULL AND expires_at <= now()"
    )
    await conn.execute(
        "DELETE FROM soft_bounce_days WHERE day < current_date - $1::integer", keep_soft_days
    )
    return int(lifted.rsplit(" ", 1)[1])


class Suppressions:
    """The suppression list, as operators see and change it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def active(self, *, reason: str | None = None, limit: int = 100) -> list[Suppression]:
        rows = await fetch(
            self._pool,
            "list suppressions",
            "SELECT * FROM suppressions WHERE ($1::text IS NULL OR reason = $1)"
            "   AND (expires_at IS NULL OR expires_at > now())"
            " ORDER BY created_at DESC LIMIT $2",
            reason,
            limit,
        )
        return [_suppression(row) for row in rows]

    async def show(self, address_key: bytes) -> Suppression | None:
        row = await fetchrow(
            self._pool,
            "show suppression",
            "SELECT * FROM suppressions WHERE address_key = $1",
            address_key,
        )
        return _suppression(row) if row is not None else None

    async def find(self, prefix: bytes) -> Sequence[Suppression]:
        """By the first bytes of the keyed hash, as logs and lists show it (`#1a2b3c4d`)."""
        rows = await fetch(
            self._pool,
            "find suppression",
            "SELECT * FROM suppressions WHERE substring(address_key FROM 1 FOR $2) = $1 LIMIT 2",
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
        added: int | None = await fetchval(
            self._pool,
            "add suppression",
            "INSERT INTO suppressions (address_key, reason, detail, expires_at)"
            " VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (address_key) DO NOTHING RETURNING 1",
            address_key,
            reason,
            detail[:1000],
            expires_at,
        )
        return added is not None
