"""The worker runtime built from the settings: its relays, the receipt and newsletter
pipelines, the handler of each queue, the dispatcher, what it holds in the ledger and its
row in `workers`. Nothing is started here (mailer/parts/worker.py starts it)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

import asyncpg

from mailer.adapters.broker import Broker
from mailer.adapters.deliveries import Deliveries
from mailer.adapters.issues import ISSUES_CHANNEL, Issues
from mailer.adapters.jobs import Jobs
from mailer.adapters.notifications import Listener
from mailer.adapters.parked import ParkedJobs
from mailer.adapters.relay import Relay
from mailer.adapters.subscribers import OPTOUT_CHANNEL, Subscribers
from mailer.adapters.throttle import Throttle
from mailer.adapters.topology import DEAD_QUEUE, ROUTES
from mailer.adapters.workers import Workers
from mailer.assembly.prepared import Prepared
from mailer.config import Settings, SmtpRelay
from mailer.core.deliveries import RetryPolicy
from mailer.core.messages import compose
from mailer.core.return_paths import ReturnPathKeys, return_path
from mailer.health import Heartbeat, RelayHealth
from mailer.metrics import Metrics
from mailer.parts.lists import MailingLists
from mailer.parts.presence import Presence
from mailer.parts.worker import Holdings, Intake, Limits, WorkerRuntime
from mailer.worker.chunks import ChunkRunner
from mailer.worker.consumers import Deliver, QueueHandler
from mailer.worker.newsletters import Dispatcher, IssueIntake
from mailer.worker.parking import DeadQueueMover, Parking
from mailer.worker.pipeline import Attempts
from mailer.worker.receipts import ReceiptPipeline
from mailer.worker.sending import LARGE_MESSAGE_BYTES, Sender, few_large_jobs
from mailer.worker.signals import Signals
from mailer.worker.subscriptions import SubscriptionChanges

DEAD_PREFETCH = 20  # messages of mailer.dead in hand, recorded one at a time
NEWSLETTER_PREFETCH = 4  # issue jobs in hand: each is acknowledged once materialised


def relay_pool(settings: Settings, relay: SmtpRelay, size: int, context: ssl.SSLContext) -> Relay:
    smtp = settings.smtp
    return Relay(
        relay, pool_size=size, timeout=smtp.timeout, context=context, helo_name=smtp.helo_name
    )


def return_path_keys(settings: Settings) -> ReturnPathKeys:
    security = settings.security
    return ReturnPathKeys.from_secrets(security.key(), security.retired())


@dataclass(frozen=True, slots=True)
class WorkerAssembly:
    """What every piece of the worker is built from."""

    settings: Settings
    prepared: Prepared
    pool: asyncpg.Pool
    broker: Broker
    lists: MailingLists  # started: the ids are known
    relay: SmtpRelay
    captured: bool  # the relay is the embedded capture server
    context: ssl.SSLContext  # one for every connection of every relay pool
    metrics: Metrics
    relay_health: RelayHealth
    heartbeat: Heartbeat
    worker_id: UUID
    clock: Callable[[], datetime]
    runs: tuple[str, ...]  # what this process runs, as operators see it

    @property
    def policy(self) -> RetryPolicy:
        give_up_after = self.settings.retry.give_up_after
        return RetryPolicy(tiers=self.prepared.tiers, give_up_after=give_up_after)

    def _return_paths(self) -> Callable[[int, date], str] | None:
        """With [bounces]: b-<token>@ per delivery; else the configured return path."""
        domain = self.settings.bounces.domain
        if domain is None:
            return None
        keys = return_path_keys(self.settings)
        return lambda delivery_id, day: return_path(keys, delivery_id, day, domain)

    def _attempts(self, kind: str, relay: Relay) -> Attempts:
        sender = Sender(
            kind=kind,
            composer=compose,
            signer=self.prepared.signer,
            relay=relay,
            return_path=self.settings.sender.return_path,  # else each message's From
            metrics=self.metrics,
            return_paths=self._return_paths(),
        )
        return Attempts(
            sender=sender,
            health=self.relay_health,
            policy=self.policy,
            clock=self.clock,
            captured=self.captured,
        )

    def build(self) -> WorkerRuntime:
        settings = self.settings
        receipt_relay = relay_pool(settings, self.relay, settings.smtp.pool_size, self.context)
        newsletter_relay = relay_pool(
            settings, self.relay, settings.newsletter.pool_size, self.context
        )
        deliveries = Deliveries(self.pool, worker_id=self.worker_id, lease=settings.worker.lease)
        receipts = self._receipts(deliveries, receipt_relay)
        subscriptions = self._subscriptions()
        throttle = Throttle(self.pool, lease=settings.worker.lease)
        signals = Signals()
        runner = self._runner(deliveries, throttle, signals, newsletter_relay)
        issues = Issues(self.pool)
        dispatcher = Dispatcher(
            issues=issues,
            deliveries=deliveries,
            runner=runner,
            signals=signals,
            renderer=self.prepared.renderer,
            lists=self.lists.by_id,
            chunk_size=settings.newsletter.chunk_size,
            rate=settings.newsletter.rate,
            poll_interval=settings.newsletter.poll_interval,
            lease=settings.worker.lease,
        )
        intake = IssueIntake(
            issues=issues,
            lists=self.lists.by_slug,
            renderer=self.prepared.renderer,
            max_attachment_bytes=settings.worker.max_attachment_bytes,
        )
        # What reaches mailer.dead (poison, or parked while the database was away) is moved
        # into the parked_jobs table.
        parked = ParkedJobs(self.pool)
        mover = DeadQueueMover(parked, clock=self.clock)
        return WorkerRuntime(
            broker=self.broker,
            intakes=self._intakes(parked, receipts, intake, subscriptions, mover),
            halting=[dispatcher, subscriptions, receipts, mover],
            dispatcher=dispatcher,
            relays=[receipt_relay, newsletter_relay],
            notifications=Listener(
                settings.database.url.get_secret_value(),
                {OPTOUT_CHANNEL: signals.on_optout, ISSUES_CHANNEL: signals.on_issue},
                on_reconnect=signals.on_reconnect,
            ),
            holdings=Holdings(deliveries, throttle, receipts, runner),
            limits=Limits(settings.newsletter.rate, settings.newsletter.domains),
            presence=self._presence(),
            relay_health=self.relay_health,
            heartbeat=self.heartbeat,
            lease=settings.worker.lease,
            drain_timeout=settings.worker.drain_timeout,
        )

    def _receipts(self, deliveries: Deliveries, relay: Relay) -> ReceiptPipeline:
        settings = self.settings
        return ReceiptPipeline(
            renderer=self.prepared.renderer,
            attempts=self._attempts("receipt", relay),
            deliveries=deliveries,
            from_=self.prepared.sender,
            hash_key=self.prepared.hash_key,
            default_locale=settings.sender.default_locale,
            max_attachment_bytes=settings.worker.max_attachment_bytes,
            retry=self.policy,
            metrics=self.metrics,
            clock=self.clock,
        )

    def _subscriptions(self) -> SubscriptionChanges:
        settings = self.settings
        return SubscriptionChanges(
            subscribers=Subscribers(self.pool, self.metrics),
            jobs=Jobs(self.pool),
            broker=self.broker,
            lists=self.lists.by_slug,
            hash_key=self.prepared.hash_key,
            token_keys=self.prepared.token_keys,
            public_url=settings.http.public_url,
            max_attachment_bytes=settings.worker.max_attachment_bytes,
            clock=self.clock,
        )

    def _runner(
        self, deliveries: Deliveries, throttle: Throttle, signals: Signals, relay: Relay
    ) -> ChunkRunner:
        settings = self.settings
        return ChunkRunner(
            deliveries=deliveries,
            throttle=throttle,
            attempts=self._attempts("newsletter", relay),
            signals=signals,
            token_keys=self.prepared.token_keys,
            public_url=settings.http.public_url,
            default_domain_rate=settings.newsletter.default_domain_rate,
            policy=self.policy,
            metrics=self.metrics,
            clock=self.clock,
            feedback_sender=settings.bounces.feedback_sender,
        )

    def _intakes(
        self,
        parked: ParkedJobs,
        receipts: ReceiptPipeline,
        intake: IssueIntake,
        subscriptions: SubscriptionChanges,
        mover: DeadQueueMover,
    ) -> list[Intake]:
        settings = self.settings
        parking = Parking(parked, self.broker, clock=self.clock)
        receipt = few_large_jobs(
            receipts.deliver, slots=settings.smtp.pool_size, threshold=LARGE_MESSAGE_BYTES
        )
        work = [
            Intake(handler.queue, handler, prefetch)
            for handler, prefetch in (
                (self._handler("receipt", receipt, parking), settings.broker.prefetch),
                (self._handler("newsletter", intake.accept, parking), NEWSLETTER_PREFETCH),
                # in order, one at a time
                (self._handler("subscription", subscriptions.apply, parking), 1),
            )
        ]
        return [*work, Intake(DEAD_QUEUE, mover, DEAD_PREFETCH)]

    def _handler(self, queue_key: str, deliver: Deliver, parking: Parking) -> QueueHandler:
        return QueueHandler(
            ROUTES[queue_key],
            deliver,
            broker=self.broker,
            parking=parking,
            metrics=self.metrics,
            unavailable_delay=self.prepared.tiers[0],
        )

    def _presence(self) -> Presence:
        return Presence(
            Workers(self.pool),
            self.worker_id,
            runs=self.runs,
            gone_after=self.settings.worker.lease,
            unacked=self.broker.unacked,
            relay=self.relay_health.report,
            metrics=self.metrics,
        )
