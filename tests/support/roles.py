"""A worker with a database login of its own, so that a test can cut that one worker off
(or take a privilege from it) while others go on."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class WorkerRole:
    name: str
    url: str  # the test database, logged in as this role
    _admin: asyncpg.Connection  # to the test database, as the superuser
    _database: str

    async def cut(self) -> None:
        """No new sessions for this role, and its open ones terminated."""
        await self._admin.execute(f"ALTER ROLE {self.name} NOLOGIN")
        await self.terminate()

    async def restore(self) -> None:
        await self._admin.execute(f"ALTER ROLE {self.name} LOGIN")

    async def terminate(self) -> None:
        await self._admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE usename = $1 AND datname = $2",
            self.name,
            self._database,
        )

    async def revoke(self, sql_privilege: str) -> None:
        """e.g. "UPDATE ON deliveries"."""
        on = sql_privilege.split(" ON ", 1)
        await self._admin.execute(f"REVOKE {on[0]} ON {on[1]} FROM {self.name}")

    async def grant(self, sql_privilege: str) -> None:
        on = sql_privilege.split(" ON ", 1)
        await self._admin.execute(f"GRANT {on[0]} ON {on[1]} TO {self.name}")


@asynccontextmanager
async def worker_role(database_url: str) -> AsyncIterator[WorkerRole]:
    """A login role with every right a worker needs on the test database; dropped after."""
    base, _, database = database_url.rpartition("/")
    name = f"mailer_w_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f"CREATE ROLE {name} LOGIN")
    try:
        for grant in (
            f"GRANT CONNECT ON DATABASE {database} TO {name}",
            f"GRANT USAGE ON SCHEMA public TO {name}",
            f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {name}",
            f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {name}",
            f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {name}",
        ):
            await admin.execute(grant)
        yield WorkerRole(name, _role_url(database_url, name), admin, database)
    finally:
        await admin.execute(f"ALTER ROLE {name} LOGIN")
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", name
        )
        await admin.execute(f"DROP OWNED BY {name}")
        await admin.close()
        control = await asyncpg.connect(base + "/postgres")
        try:
            await control.execute(f"DROP ROLE IF EXISTS {name}")
        finally:
            await control.close()


def _role_url(database_url: str, role: str) -> str:
    scheme, _, rest = database_url.partition("://")
    _, _, host = rest.rpartition("@")
    return f"{scheme}://{role}@{host}"
