"""What the console's pages read from and act on, built once by the service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mailer.adapters.bounces import BounceReports
from mailer.adapters.broker import Broker
from mailer.adapters.dead_letters import DeadLetters
from mailer.adapters.issues import Issues
from mailer.adapters.ledger_views import LedgerViews
from mailer.adapters.operators import Operators
from mailer.adapters.parked import ParkedJobs
from mailer.adapters.suppressions import Suppressions
from mailer.adapters.webhooks import WebhookEndpoints
from mailer.adapters.workers import Workers
from mailer.config import AdminSettings
from mailer.core.trials import Previewer, TestSend
from mailer.web.console.cache import Fresh

Readiness = Callable[[], Awaitable[dict[str, dict[str, object]]]]


@dataclass
class Console:
    settings: AdminSettings
    operators: Operators
    views: LedgerViews
    issues: Issues
    suppressions: Suppressions
    bounces: BounceReports
    broker: Callable[[], Awaitable[Broker]]  # connected on first use, if the worker has none
    queue_names: list[str]
    workers: Workers  # the worker processes report what they hold unacknowledged
    hash_key: bytes
    parked: ParkedJobs  # the parked jobs, read from the database
    dead_letters: DeadLetters  # their requeue and purge
    readiness: Readiness | None  # the worker's own checks (relay, consumers), when it runs here
    webhooks: WebhookEndpoints  # the accounts' webhook endpoints
    preview: Previewer | None = None
    test_send: TestSend | None = None  # None: no relay in this process
    fresh: Fresh = field(default_factory=Fresh)
