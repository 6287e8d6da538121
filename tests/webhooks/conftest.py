"""A test's webhook world: its database, a TLS receiver on loopback, and dispatchers built
as the worker builds them (mailer/assembly/webhooks.py), with settings the test adjusts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from mailer.adapters import database
from mailer.adapters.webhooks import WebhookEndpoints
from mailer.assembly.webhooks import sealing_keys, webhook_delivery
from mailer.config import Settings, build_settings
from mailer.metrics import Metrics
from mailer.parts.webhooks import WebhookDelivery
from tests.conftest import SECRET
from tests.support.tls import Pki, make_pki
from tests.support.webhooks import Receiver


@pytest.fixture(scope="session")
def webhook_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("webhook-pki"))


@pytest.fixture
def hooks_config(database_url: str, webhook_pki: Pki) -> dict[str, Any]:
    """[webhooks] for a test: its loopback receiver allowed, short delays."""
    return {
        "database": {"url": database_url},
        "security": {"secret_key": SECRET},
        "webhooks": {
            "allow": ["127.0.0.1/32"],
            "ca_file": str(webhook_pki.ca_file),
            "first_delay": 0.2,
            "max_delay": 0.8,
            "poll_interval": 0.05,
            "timeout": 5,
        },
    }


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    opened = await database.open_pool(database_url, size=6)
    yield opened
    await opened.close()


@pytest.fixture
async def receiver(webhook_pki: Pki) -> AsyncIterator[Receiver]:
    one = Receiver(webhook_pki)
    await one.start()
    yield one
    await one.stop()


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
