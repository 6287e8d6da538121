"""A database outage, for real: the test's database refuses connections meanwhile."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg


@asynccontextmanager
async def database_away(database_url: str) -> AsyncIterator[None]:
    """Inside the block the database takes no connections and has lost those it had."""
    base, _, name = database_url.rpartition("/")
    admin = await asyncpg.connect(base + "/postgres")
    try:
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        yield
    finally:
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        await admin.close()
