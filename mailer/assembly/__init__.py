"""The composition root: which parts this process runs, built from the settings, in the
order they start (the service stops them in reverse).

Nothing here starts or stops anything. `Assembly.parts()` yields one part at a time, and
the service starts each before it asks for the next: so a part is built with what the parts
before it opened (the pool, the list ids, the capture server's port, the worker whose checks
/readyz answers with). The listeners come last: once /healthz answers, /readyz can too.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from mailer.adapters.broker import Broker
from mailer.adapters.queues import queue_names
from mailer.adapters.relay import tls_context
from mailer.adapters.subscribers import Subscribers
from mailer.assembly.console import operators_console
from mailer.assembly.events import event_parts
from mailer.assembly.prepared import Prepared, prepare, worker_relay
from mailer.assembly.webhooks import webhook_delivery
from mailer.assembly.worker import WorkerAssembly, return_path_keys
from mailer.config import Settings, SmtpRelay
from mailer.errors import ConfigError
from mailer.health import Heartbeat, RelayHealth
from mailer.metrics import Metrics
from mailer.parts import Part, Readiness, readiness_of
from mailer.parts.bounces import BounceReception
from mailer.parts.broker import BrokerConnection
from mailer.parts.capture import Capture
from mailer.parts.database import Database
from mailer.parts.lists import MailingLists
from mailer.parts.sampler import Sampling
from mailer.parts.web import PublicWeb
from mailer.parts.worker import WorkerRuntime
from mailer.sampling import Sampler
from mailer.web.public.app import WebServer
from mailer.web.public.pages import RecipientPages
from mailer.worker.bounces import BounceService


@dataclass(frozen=True, slots=True)
class Selection:
    """What runs in this process: `mailer run` the worker, the web and (when [bounces]
    domain is set) the bounce receiver; `mailer worker`, `mailer web`, `mailer bounces
    serve` one each."""

    worker: bool
    web: bool
    bounces: bool
    bounces_required: bool  # asked for by name: without a [bounces] domain, an error


@dataclass(frozen=True, slots=True)
class Assembly:
    settings: Settings
    selection: Selection
    metrics: Metrics
    worker_id: UUID
    clock: Callable[[], datetime]
    sample_interval: float  # of the gauges on /metrics measured outside
    relay_health: RelayHealth  # the worker's relay sessions (on /metrics whatever runs)
    heartbeat: Heartbeat  # the worker's lease renewals

    def parts(self) -> Iterator[Part]:
        """Database → mailing lists → [capture server] → [broker → worker → events relay →
        webhooks] → [bounce receiver] → [public web → operators' console → sampler], as the
        selection has them."""
        settings, selection = self.settings, self.selection
        prepared = prepare(settings)  # what the settings alone decide, before any connection
        relay = worker_relay(settings) if selection.worker else settings.smtp.relay()
        if selection.bounces_required and settings.bounces.domain is None:
            raise ConfigError(
                "config: [bounces] domain (MAILER_BOUNCES_DOMAIN): not set, so there is"
                " no bounce address to receive reports for"
            )
        context = tls_context(settings.smtp.ca_file)  # one for every connection of every relay
        database = Database(settings.database, size=settings.database.pool_size)
        yield database
        subscribers = Subscribers(database.pool, self.metrics)
        lists = MailingLists(subscribers, settings.lists, prepared.list_senders)
        yield lists
        reporting: list[Part] = []  # the checks of the worker's parts, on /readyz
        broker: Broker | None = None  # the worker's: the console and the sampler use it too
        if selection.worker:
            captured = relay is None
            if relay is None:
                capture = Capture(settings.smtp.capture_dir)
                yield capture
                relay = capture.relay
            connection = BrokerConnection(
                Broker.from_settings(settings.broker, name=f"mailer worker {self.worker_id}"),
                delays=prepared.tiers,
            )
            yield connection
            broker = connection.broker
            worker = self._worker(
                prepared, database, broker, lists, relay=relay, captured=captured, context=context
            )
            yield worker
            reporting += [connection, worker]
            for part in event_parts(settings, broker, self.metrics):
                yield part
                reporting.append(part)
            yield webhook_delivery(
                settings, database.pool, worker_id=self.worker_id, metrics=self.metrics
            )
        if selection.bounces and settings.bounces.domain is not None:
            bounces = BounceReception(self._bounces(prepared, database))
            yield bounces
            reporting.append(bounces)
        if selection.web:
            public_checks = readiness_of([database, *reporting])
            yield self._public_web(prepared, subscribers, lists, public_checks)
            yield operators_console(
                settings,
                prepared,
                broker=broker,
                relay=relay,
                context=context,
                readiness=readiness_of(reporting) if selection.worker else None,
                metrics=self.metrics,
                clock=self.clock,
            )
            yield self._sampling(prepared, database, broker)

    def _worker(
        self,
        prepared: Prepared,
        database: Database,
        broker: Broker,
        lists: MailingLists,
        *,
        relay: SmtpRelay,
        captured: bool,
        context: ssl.SSLContext,
    ) -> WorkerRuntime:
        return WorkerAssembly(
            settings=self.settings,
            prepared=prepared,
            pool=database.pool,
            broker=broker,
            lists=lists,
            relay=relay,
            captured=captured,
            context=context,
            metrics=self.metrics,
            relay_health=self.relay_health,
            heartbeat=self.heartbeat,
            worker_id=self.worker_id,
            clock=self.clock,
            runs=("worker", "web") if self.selection.web else ("worker",),
        ).build()

    def _bounces(self, prepared: Prepared, database: Database) -> BounceService:
        return BounceService(
            self.settings.bounces,
            pool=database.pool,
            keys=return_path_keys(self.settings),
            hash_key=prepared.hash_key,
            metrics=self.metrics,
            clock=self.clock,
        )

    def _public_web(
        self,
        prepared: Prepared,
        subscribers: Subscribers,
        lists: MailingLists,
        readiness: Readiness,
    ) -> PublicWeb:
        settings = self.settings
        pages = RecipientPages(
            subscribers=subscribers,
            lists=lists.by_id,
            token_keys=prepared.token_keys,
            templates_dir=settings.worker.templates_dir,
            confirm_days=settings.newsletter.confirm_days,
            http=settings.http,
            clock=self.clock,
        )
        return PublicWeb(WebServer(settings.http, readiness=readiness, pages=pages), settings.http)

    def _sampling(self, prepared: Prepared, database: Database, broker: Broker | None) -> Sampling:
        """Through the worker's broker connection, or else one of the sampler's own."""
        settings = self.settings
        sampler = Sampler(
            metrics=self.metrics,
            pool=database.pool,
            broker=broker,
            queues=queue_names(round(t * 1000) for t in prepared.tiers),
            interval=self.sample_interval,
            connect=lambda: Broker.from_settings(
                settings.broker, name=f"mailer metrics {self.worker_id}"
            ),
        )
        return Sampling(sampler)
