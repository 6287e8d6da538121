"""The PostgreSQL pool as a part: opened at start (the schema must be current), closed at
stop, and whether the database takes writes reported to /readyz."""

from __future__ import annotations

import asyncpg

from mailer.adapters import database
from mailer.config import DatabaseSettings
from mailer.parts import Checks


class Database:
    def __init__(self, settings: DatabaseSettings, *, size: int, name: str = "database") -> None:
        """`pool` exists from here on, for what is built with it; it connects at start."""
        self.name = name
        self.pool: asyncpg.Pool = database.new_pool(settings.url.get_secret_value(), size=size)
        self._open = False

    async def start(self) -> None:
        await database.opened(self.pool)
        self._open = True

    async def stop(self) -> None:
        if self._open:
            self._open = False
            await self.pool.close()

    async def readiness(self) -> Checks:
        reachable = await database.ping(self.pool)
        detail = "reachable" if reachable else "unreachable"
        return {"database": {"ok": reachable, "detail": detail}}
