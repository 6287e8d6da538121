"""A test's webhook world: its database, a TLS receiver on loopback, and dispatchers built
as the worker builds them (mailer/assembly/webhooks.py), with settings the test adjusts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from mailer.adapters import database
from mailer.adapters.webhooks import WebhookEndpoints, sealing_keys
from mailer.assembly.webhooks import webhook_delivery
from mailer.config import Settings, build_settings
from mailer.metrics import Metrics
from mailer.parts.webhooks import WebhookDelivery
from tests.conftest import SECRET
from tests.support.tls import Pki
from tests.support.webhooks import receiver, webhook_pki, webhooks_section


@pytest.fixture
def hooks_config(database_url: str, webhook_pki: Pki) -> dict[str, Any]:
    """[webhooks] for a test: its loopback receiver allowed, short delays."""
    return {
        "database": {"url": database_url},
        "security": {"secret_key": SECRET},
        "webhooks": webhooks_section(webhook_pki),
    }


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    opened = await database.open_pool(database_url, size=6)
    yield opened
    await opened.close()


StartDispatcher = Callable[[Settings], Awaitable[WebhookDelivery]]


@pytest.fixture
async def start_dispatcher(pool: asyncpg.Pool) -> AsyncIterator[StartDispatcher]:
    """Start a dispatcher part (as one worker process runs it); each is stopped after."""
    started: list[WebhookDelivery] = []

    async def start(settings: Settings) -> WebhookDelivery:
        part = webhook_delivery(settings, pool, worker_id=uuid4(), metrics=Metrics())
        await part.start()
        started.append(part)
        return part

    yield start
    for part in reversed(started):
        await part.stop()


def settings_of(config: dict[str, Any]) -> Settings:
    return build_settings(config)


def endpoints_of(pool: asyncpg.Pool, settings: Settings) -> WebhookEndpoints:
    return WebhookEndpoints(pool, sealing_keys(settings))


__all__ = ["receiver", "webhook_pki"]  # fixtures of tests/support/webhooks.py
