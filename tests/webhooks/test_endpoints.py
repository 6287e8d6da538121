"""The endpoints' table through its owner: leases, replays, and secrets that no longer open."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from mailer.adapters.webhooks import WebhookEndpoints
from mailer.core.webhooks.sealing import SealingKeys
from tests.support.webhooks import publish_events
from tests.webhooks.conftest import endpoints_of, settings_of

URL = "https://hooks.acme.example/in"


async def test_one_process_at_a_time_holds_an_endpoint(
    hooks_config: dict[str, Any], pool: asyncpg.Pool, database_url: str
) -> None:
    endpoints = endpoints_of(pool, settings_of(hooks_config))
    await endpoints.register("default", URL, batch_size=10)
    nothing = await endpoints.claim(uuid4(), timedelta(minutes=1), 10)
    assert nothing == []  # no events after its cursor: not due
    await publish_events(database_url, 3)
    first, second = uuid4(), uuid4()
    [claim] = await endpoints.claim(first, timedelta(minutes=1), 10)
    assert await endpoints.claim(second, timedelta(minutes=1), 10) == []
    assert claim.cursor_position == 0 and len(claim.keys) == 1
    await endpoints.release(claim.id, second)  # not its lease: nothing changes
    assert await endpoints.claim(second, timedelta(minutes=1), 10) == []
    await endpoints.release(claim.id, first)
    assert len(await endpoints.claim(second, timedelta(minutes=1), 10)) == 1


async def test_a_new_endpoint_starts_at_the_newest_event_and_a_replay_only_goes_back(
    hooks_config: dict[str, Any], pool: asyncpg.Pool, database_url: str
) -> None:
    endpoints = endpoints_of(pool, settings_of(hooks_config))
    await publish_events(database_url, 4)
    await publish_events(database_url, 2, account="other")
    endpoint, _ = await endpoints.register("default", URL, batch_size=10)
    shown = await endpoints.get(endpoint)
    assert (shown.cursor_position, shown.backlog) == (4, 0)
    assert await endpoints.replay(endpoint, datetime.now(UTC) + timedelta(days=1)) == 4
    assert await endpoints.replay(endpoint, datetime(2000, 1, 1, tzinfo=UTC)) == 0
    assert (await endpoints.get(endpoint)).backlog == 4  # the other account's are not its


async def test_a_secret_sealed_under_another_key_is_not_used_to_sign(
    hooks_config: dict[str, Any],
    pool: asyncpg.Pool,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoints = endpoints_of(pool, settings_of(hooks_config))
    endpoint, _ = await endpoints.register("default", URL, batch_size=10)
    await publish_events(database_url, 1)
    stranger = WebhookEndpoints(pool, SealingKeys.from_secrets(b"another key " * 4))
    assert await stranger.claim(uuid4(), timedelta(seconds=1), 10) == []
    assert f"endpoint {endpoint} cannot sign" in caplog.text
