"""The suppression list as an operator edits it from the console: lift a bounce or
complaint, or add one. Addresses arrive as their keyed hash, never in clear."""

from __future__ import annotations

import asyncpg

from mailer.adapters.database import unavailable_is_temporary

MANUAL_REASONS = ("hard_bounce", "complaint")


class SuppressionList:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def lift(self, address_key: bytes) -> str | None:
        """Remove a bounce or complaint suppression; returns its reason. An erasure stays:
        it is what keeps a forgotten person from being mailed again."""
        async with unavailable_is_temporary("lift suppression"):
            reason: str | None = await self._pool.fetchval(
                "DELETE FROM suppressions WHERE address_key = $1 AND reason <> 'erased'"
                " RETURNING reason",
                address_key,
            )
        return reason

    async def add(self, address_key: bytes, reason: str, detail: str) -> bool:
        async with unavailable_is_temporary("add suppression"):
            added = await self._pool.fetchval(
                "INSERT INTO suppressions (address_key, reason, detail) VALUES ($1, $2, $3)"
                " ON CONFLICT (address_key) DO NOTHING RETURNING true",
                address_key,
                reason,
                detail,
            )
        return bool(added)
