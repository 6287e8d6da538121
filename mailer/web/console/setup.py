"""Build the console's parts from the settings and the service's pool."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from mailer.adapters.bounces import BounceReports
from mailer.adapters.broker import Broker
from mailer.adapters.dead_letters import DeadLetters
from mailer.adapters.issues import Issues
from mailer.adapters.ledger_views import LedgerViews
from mailer.adapters.operators import Operators
from mailer.adapters.parked import ParkedJobs
from mailer.adapters.queues import queue_names
from mailer.adapters.suppressions import Suppressions
from mailer.adapters.webhooks import WebhookEndpoints, sealing_keys
from mailer.adapters.workers import Workers
from mailer.config import Settings
from mailer.core.trials import Previewer, TestSend
from mailer.web.console.context import Console, Readiness


def build_console(
    settings: Settings,
    pool: asyncpg.Pool,
    *,
    broker: Callable[[], Awaitable[Broker]],
    tiers: Sequence[float],
    hash_key: bytes,
    readiness: Readiness | None,
    preview: Previewer | None = None,
    test_send: TestSend | None = None,
) -> Console:
    parked = ParkedJobs(pool)
    return Console(
        settings=settings.admin,
        operators=Operators(pool),
        views=LedgerViews(pool),
        issues=Issues(
            pool, default_locales={slug: one.default_locale for slug, one in settings.lists.items()}
        ),
        suppressions=Suppressions(pool),
        bounces=BounceReports(pool),
        broker=broker,
        queue_names=queue_names(round(t * 1000) for t in tiers),
        workers=Workers(pool),
        hash_key=hash_key,
        parked=parked,
        dead_letters=DeadLetters(parked, broker),
        readiness=readiness,
        webhooks=WebhookEndpoints(pool, sealing_keys(settings)),
        preview=preview,
        test_send=test_send,
    )
