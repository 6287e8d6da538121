"""The webhook dispatcher built from the settings ([webhooks], the sealing keys of
[security]): nothing started here (mailer/parts/webhooks.py starts it)."""

from __future__ import annotations

import random
from uuid import UUID

import asyncpg

from mailer.adapters.relay import tls_context
from mailer.adapters.webhook_client import WebhookClient
from mailer.adapters.webhooks import WebhookEndpoints, sealing_keys
from mailer.config import Settings
from mailer.core.webhooks.retries import Backoff
from mailer.core.webhooks.targets import networks
from mailer.metrics import Metrics
from mailer.parts.webhooks import WebhookDelivery
from mailer.worker.webhooks import WebhookDispatcher


def lease_seconds(settings: Settings) -> float:
    """An endpoint's lease outlasts a request (its timeout) with room for the database."""
    return 2 * settings.webhooks.timeout + 30.0


def webhook_delivery(
    settings: Settings, pool: asyncpg.Pool, *, worker_id: UUID, metrics: Metrics
) -> WebhookDelivery:
    hooks = settings.webhooks
    client = WebhookClient(
        allow=networks(hooks.allow), timeout=hooks.timeout, context=tls_context(hooks.ca_file)
    )
    jitter = random.SystemRandom()
    dispatcher = WebhookDispatcher(
        WebhookEndpoints(pool, sealing_keys(settings)),
        client,
        pool=pool,
        worker_id=worker_id,
        backoff=Backoff(hooks.first_delay, hooks.max_delay),
        disable_after=hooks.disable_after,
        poll_interval=hooks.poll_interval,
        lease=lease_seconds(settings),
        concurrency=hooks.concurrency,
        metrics=metrics,
        draw=jitter.random,
    )
    return WebhookDelivery(dispatcher, client)
