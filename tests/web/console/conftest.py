"""A running mailer (worker and web) with its console, and operators to log in as."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest

from mailer.adapters.operators import Operators
from mailer.core.passwords import hash_password
from mailer.service import Service
from tests.conftest import StartService
from tests.support.http import admin_url

PASSWORD = "correct horse battery staple"
ACCOUNTS = {"alice": "operator", "victor": "viewer"}


async def add_operators(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        operators = Operators(pool)
        for name, role in ACCOUNTS.items():
            assert await operators.add(name, role, hash_password(PASSWORD))  # type: ignore[arg-type]
    finally:
        await pool.close()


@dataclass
class Console:
    service: Service
    url: str

    @property
    def origin(self) -> dict[str, str]:
        return {"Origin": self.url}


StartConsole = Callable[..., Awaitable[Console]]


@pytest.fixture
async def start_console(
    config: dict[str, Any], start_service: StartService, database_url: str
) -> StartConsole:
    """Start mailer with its console; `http` and `admin` settings are added to the tests'
    own, and `run_worker=False` starts it as `mailer web` does."""

    async def start(
        *,
        http: dict[str, Any] | None = None,
        admin: dict[str, Any] | None = None,
        run_worker: bool = True,
    ) -> Console:
        config["newsletter"] = {"rate": 40, "chunk_size": 20, "poll_interval": 0.2}
        config["admin"]["login_attempts"] = 3
        config["admin"]["refresh_seconds"] = 1  # the pages refresh themselves this often
        config["http"].update(http or {})
        config["admin"].update(admin or {})
        await add_operators(database_url)
        service = await start_service(config, run_worker=run_worker)
        return Console(service, admin_url(service))

    return start


@pytest.fixture
async def console(start_console: StartConsole) -> Console:
    return await start_console()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # a cookie jar that keeps cookies for an IP address host, as a browser would
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def log_in(http: aiohttp.ClientSession, console: Console, name: str) -> str:
    """Log in; returns the session's CSRF token, as the pages hand it out."""
    async with http.post(
        console.url + "/login",
        data={"name": name, "password": PASSWORD},
        headers=console.origin,
        allow_redirects=False,
    ) as response:
        assert response.status == 303, await response.text()
    async with http.get(console.url + "/") as response:
        assert response.status == 200
        page = await response.text()
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)
