"""Pacing shared by every worker process: token buckets and leased concurrency slots in
PostgreSQL (the functions of `sql/throttle.sql`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

import asyncpg

from mailer.adapters.database import execute, fetch, transaction
from mailer.config import DomainLimit
from mailer.errors import TemporaryFailure

log = logging.getLogger(__name__)
GLOBAL = "*"


@dataclass(frozen=True, slots=True)
class Grant:
    messages: int
    lanes: int | None  # None: no concurrency limit


class Throttle:
    def __init__(self, pool: asyncpg.Pool, *, lease: float) -> None:
        self._pool = pool
        self._lease = timedelta(seconds=lease)

    async def configure(self, rate: float, domains: Mapping[str, DomainLimit]) -> None:
        """Make the configured limits the ones in force (every worker should share them)."""
        keys = [GLOBAL, *domains]
        rates = [rate, *(limit.rate for limit in domains.values())]
        concurrency = [None, *(limit.concurrency for limit in domains.values())]
        async with transaction(self._pool, "throttle") as conn:
            await conn.execute("DELETE FROM throttle WHERE configured AND NOT key = ANY($1)", keys)
            await conn.execute(
                "INSERT INTO throttle (key, rate, concurrency, tokens, configured)"
                " SELECT k, r, c, 0, true FROM unnest($1::text[], $2::float8[], $3::int[])"
                "   AS x(k, r, c)"
                " ON CONFLICT (key) DO UPDATE SET rate = excluded.rate,"
                "   concurrency = excluded.concurrency, configured = true",
                keys,
                rates,
                concurrency,
            )

    async def take(self, holder: UUID, wanted: Mapping[str, int]) -> dict[str, Grant]:
        """How many messages may go now to each domain, and how many of them side by side
        (one round trip)."""
        if not wanted:
            return {}
        rows = await fetch(
            self._pool,
            "throttle",
            "SELECT domain, granted, lanes FROM take_throttle($1, $2, $3, $4)",
            holder,
            list(wanted),
            list(wanted.values()),
            self._lease,
        )
        return {row["domain"]: Grant(row["granted"], row["lanes"]) for row in rows}

    async def renew(self, holders: Sequence[UUID]) -> None:
        if not holders:
            return
        await execute(
            self._pool,
            "throttle",
            "UPDATE throttle_slots SET expires_at = clock_timestamp() + $2 WHERE holder = ANY($1)",
            list(holders),
            self._lease,
        )

    async def release(
        self,
        holder: UUID,
        deferred: Sequence[str],
        accepted: Sequence[str],
        default_rate: float,
    ) -> None:
        """At the end of a chunk: give back its slots and report how domains answered.
        A failure is only logged: unreleased slots lapse with their lease."""
        try:
            await execute(
                self._pool,
                "throttle",
                "SELECT throttle_release($1, $2, $3, $4)",
                holder,
                list(deferred),
                list(accepted),
                default_rate,
            )
        except TemporaryFailure as exc:
            log.warning("throttle slots left to lapse: %s", exc)
