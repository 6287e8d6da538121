"""The recipients' pages served for real: a service with two lists, Anna and John on one."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest

from mailer.core.tokens import Subscription, TokenKeys, unsubscribe_token
from mailer.service import Service
from tests.conftest import SECRET, StartService
from tests.support.http import base_url
from tests.support.newsletters import subscribe

KEYS = TokenKeys.from_secrets(SECRET.encode())
ANNA = "anna.nowak@example.pl"
SAME_ORIGIN = {"Origin": "https://mail.lucid.example"}  # the tests' [http] public_url


def undo_form(page: str) -> dict[str, str]:
    """The undo button's form, as the page rendered it."""
    found = re.search(r'name="undo" value="([^"]+)"', page)
    assert found is not None, "the page offers no undo"
    return {"action": "resubscribe", "undo": found.group(1)}


StartWeb = Callable[..., Awaitable[Service]]


@pytest.fixture
async def start_web(
    config: dict[str, Any], start_service: StartService, database_url: str
) -> StartWeb:
    """Start the web service alone; keyword arguments go to `[http]`, `clock` to the service."""
    config["lists"]["other-news"] = {
        "name": "Other News",
        "from": "Other <o@lucid.example>",
        "default_locale": "en",
    }
    await subscribe(database_url, [(ANNA, "Anna Nowak", "pl"), ("john@example.com", "John", "en")])

    async def start(**http: Any) -> Service:
        service_args = {"clock": http.pop("clock")} if "clock" in http else {}
        config["http"].update(http)
        return await start_service(config, run_worker=False, **service_args)

    return start


@pytest.fixture
async def web(start_web: StartWeb) -> Service:
    return await start_web()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def ids(db: asyncpg.Connection, email: str) -> Subscription:
    row = await db.fetchrow(
        "SELECT s.id, l.id AS list_id FROM subscribers s, lists l"
        " WHERE s.email = $1 AND l.slug = 'lucid-news'",
        email,
    )
    assert row is not None
    return Subscription(row["id"], row["list_id"])


async def status(db: asyncpg.Connection, email: str = ANNA) -> str:
    value: str = await db.fetchval(
        "SELECT sub.status FROM subscriptions sub JOIN subscribers s ON s.id = sub.subscriber_id"
        " WHERE s.email = $1",
        email,
    )
    return value


async def link(db: asyncpg.Connection, service: Service, email: str = ANNA) -> str:
    return f"{base_url(service)}/u/{unsubscribe_token(KEYS, await ids(db, email))}"
