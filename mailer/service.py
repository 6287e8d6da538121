"""Lifecycle: build every part from the settings, run, and stop without losing a message.

Start: what the settings alone decide (templates, keys, addresses) is checked before any
connection → capture server (when no relay is configured) → database (schema must be
current) → broker (topology declared) → consumers and dispatchers → HTTP service.

Stop (SIGTERM): consumers stop taking messages and dispatchers stop claiming; the relays
refuse new transactions, so work that has not reached a relay goes straight back (to its
queue, or to the ledger as pending) while a transaction under way finishes and is recorded;
then everything closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from uuid import UUID, uuid4

import asyncpg

from mailer.adapters import database
from mailer.adapters.broker import Broker
from mailer.adapters.capture import CaptureServer
from mailer.adapters.consuming import Consumer
from mailer.adapters.deliveries import Deliveries
from mailer.adapters.issues import ISSUES_CHANNEL, Issues
from mailer.adapters.jobs import Jobs
from mailer.adapters.notifications import Listener
from mailer.adapters.parked import ParkedJobs
from mailer.adapters.queues import queue_names
from mailer.adapters.relay import Relay, tls_context
from mailer.adapters.subscribers import OPTOUT_CHANNEL, Subscribers
from mailer.adapters.throttle import Throttle
from mailer.adapters.topology import DEAD_QUEUE, ROUTES
from mailer.adapters.workers import Workers
from mailer.build import VERSION
from mailer.config import Settings, SmtpRelay, read_private_file
from mailer.core.audience import MailingList
from mailer.core.deliveries import RetryPolicy
from mailer.core.messages import Mailbox, compose, parse_mailbox
from mailer.core.outcomes import delay_tiers
from mailer.core.rendering import Renderer
from mailer.core.return_paths import ReturnPathKeys, return_path
from mailer.core.signing import DkimKey, NoSigner, OpenSSLSigner, Signer, load_key
from mailer.core.tokens import TokenKeys, derive_key
from mailer.core.trials import TestSend
from mailer.errors import ConfigError, TemporaryFailure
from mailer.health import Heartbeat, RelayHealth
from mailer.listening import listening
from mailer.metrics import Metrics
from mailer.sampling import SAMPLE_INTERVAL, Sampler
from mailer.web.console.app import AdminServer
from mailer.web.console.setup import build_console
from mailer.web.public.app import WebServer
from mailer.web.public.pages import RecipientPages
from mailer.worker.bounces import BounceService
from mailer.worker.chunks import ChunkRunner
from mailer.worker.consumers import QueueHandler
from mailer.worker.newsletters import Dispatcher, IssueIntake
from mailer.worker.parking import DeadQueueMover, Parking
from mailer.worker.pipeline import Attempts
from mailer.worker.preview_pool import PreviewPool, PreviewSetup, pool_test_sender
from mailer.worker.receipts import ReceiptPipeline
from mailer.worker.reports import ProcessReport
from mailer.worker.sending import LARGE_MESSAGE_BYTES, Sender, few_large_jobs
from mailer.worker.signals import Signals
from mailer.worker.subscriptions import SubscriptionChanges

log = logging.getLogger(__name__)
DISPATCH_LOOPS = 2  # chunks in hand at once per process: one sends while the other records
TASKS_GRACE = 2.0  # seconds for the background loops to end by themselves at a stop
TEST_POOL_SIZE = 2  # connections for the console's test sends
DEAD_PREFETCH = 20  # messages of mailer.dead in hand, recorded one at a time


def retry_tiers(settings: Settings) -> tuple[float, ...]:
    retry = settings.retry
    return delay_tiers(retry.first_delay, retry.max_delay, retry.multiplier)


def load_signer(settings: Settings) -> Signer:
    dkim = settings.dkim
    if not dkim.enabled:
        log.warning("no [dkim] key configured: messages go out unsigned")
        return NoSigner()
    keys: list[DkimKey] = []
    pairs = [
        ("key_file", dkim.selector, dkim.key_file),
        ("ed25519_key_file", dkim.ed25519_selector, dkim.ed25519_key_file),
    ]
    for setting, selector, path in pairs:
        if path is None or selector is None or dkim.domain is None:
            continue
        pem = read_private_file(path, f"[dkim] {setting}")
        try:
            key = load_key(pem, domain=dkim.domain, selector=selector)
        except ValueError as exc:
            raise ConfigError(f"config: [dkim] {setting}: {path}: {exc}") from None
        if setting == "ed25519_key_file" and key.algorithm != "ed25519-sha256":
            raise ConfigError(f"config: [dkim] ed25519_key_file: {path} is not an Ed25519 key")
        keys.append(key)
    return OpenSSLSigner(keys)


def _mailbox(text: str, setting: str) -> Mailbox:
    try:
        return parse_mailbox(text)
    except ValueError as exc:
        raise ConfigError(f"config: {setting}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Parts:
    """What is built from the settings alone, checked before any connection is made."""

    renderer: Renderer
    signer: Signer
    sender: Mailbox
    hash_key: bytes
    token_keys: TokenKeys
    tiers: tuple[float, ...]
    list_senders: dict[str, Mailbox]


def build_parts(settings: Settings) -> Parts:
    try:
        renderer = Renderer(settings.worker.templates_dir)
    except ValueError as exc:
        raise ConfigError(f"config: [worker] templates_dir: {exc}") from None
    missing = {"receipt", "newsletter", "confirm"} - renderer.names
    if missing:
        raise ConfigError(
            f"config: [worker] templates_dir: {settings.worker.templates_dir} has no "
            f"{', '.join(sorted(missing))} template"
        )
    security = settings.security
    return Parts(
        renderer=renderer,
        signer=load_signer(settings),
        sender=_mailbox(settings.sender.from_, "[sender] from (MAILER_SENDER_FROM)"),
        hash_key=derive_key(security.address_secret(), "address"),
        token_keys=TokenKeys.from_secrets(security.key(), security.retired()),
        tiers=retry_tiers(settings),
        list_senders={
            slug: _mailbox(lst.from_, f"[lists.{slug}] from")
            for slug, lst in settings.lists.items()
        },
    )


@dataclass
class Service:
    settings: Settings
    run_worker: bool = True
    run_web: bool = True
    # The bounce receiver, when [bounces] domain is set; None: in `mailer run` (worker and web).
    run_bounces: bool | None = None
    metrics: Metrics = field(default_factory=Metrics)
    worker_id: UUID = field(default_factory=uuid4)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    sample_interval: float = SAMPLE_INTERVAL  # of the gauges on /metrics measured outside

    def __post_init__(self) -> None:
        self.capture: CaptureServer | None = None
        self.pool: asyncpg.Pool | None = None
        self.broker: Broker | None = None
        self.relays: list[Relay] = []
        self._test_relay: Relay | None = None  # the console's test sends, apart from the work
        self.deliveries: Deliveries | None = None
        self.relay_health = RelayHealth(self.metrics)
        self.heartbeat = Heartbeat(self.settings.worker.lease)
        self.receipts: ReceiptPipeline | None = None
        self.runner: ChunkRunner | None = None
        self.web: WebServer | None = None
        self.admin: AdminServer | None = None
        self._console_broker: Broker | None = None
        self._console_pool: asyncpg.Pool | None = None
        self._previews: PreviewPool | None = None
        self.listener: Listener | None = None
        self.dispatcher: Dispatcher | None = None
        self.subscriptions: SubscriptionChanges | None = None
        self.mover: DeadQueueMover | None = None
        self.workers: Workers | None = None
        self.report = ProcessReport(
            lambda: self.workers,
            self.worker_id,
            self._unacked,
            lambda: self.relay_health.report() if self.run_worker else None,
        )
        self.bounces: BounceService | None = None
        self._consumers: list[Consumer] = []
        self._loops: list[asyncio.Task[None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        settings = self.settings
        parts = build_parts(settings)
        self.pool = await database.open_pool(
            settings.database.url.get_secret_value(), size=settings.database.pool_size
        )
        self.deliveries = Deliveries(
            self.pool, worker_id=self.worker_id, lease=settings.worker.lease
        )
        subscribers = Subscribers(self.pool, self.metrics)
        ids = await subscribers.list_ids(settings.lists)
        lists = {
            slug: MailingList(
                ids[slug], slug, lst.name, parts.list_senders[slug], lst.default_locale
            )
            for slug, lst in settings.lists.items()
        }
        if self.run_worker:
            await self._start_worker(parts, subscribers, lists)
        if self.run_bounces or (self.run_bounces is None and self.run_worker and self.run_web):
            await self._start_bounces(parts)
        if self.run_web:
            pages = RecipientPages(
                subscribers=subscribers,
                lists={mailing_list.id: mailing_list for mailing_list in lists.values()},
                token_keys=parts.token_keys,
                templates_dir=settings.worker.templates_dir,
                confirm_days=settings.newsletter.confirm_days,
                http=settings.http,
                clock=self.clock,
            )
            self.web = WebServer(
                settings.http,
                pool=self.pool,
                broker=self.broker,
                pages=pages,
                readiness=self.readiness if self.run_worker else None,
            )
            with listening("http", settings.http.host, settings.http.port):
                await self.web.start()
            await self._start_console(parts)
            self._start_sampling()
        log.info(
            "mailer started worker=%s web=%s bounces=%s",
            self.run_worker,
            self.run_web,
            self.bounces is not None,
        )

    async def _start_console(self, parts: Parts) -> None:
        """The [admin] listener: the operators' console, its API and /metrics. Its reads
        go through a small pool of their own, never taking the worker's connections; its
        previews and test sends render in processes of their own."""
        self._console_pool = await database.open_pool(
            self.settings.database.url.get_secret_value(), size=2
        )
        admin = self.settings.admin
        self._previews = previews = PreviewPool(
            PreviewSetup(
                lists=self._preview_lists(parts),
                templates_dir=self.settings.worker.templates_dir,
                max_attachment_bytes=self.settings.worker.max_attachment_bytes,
                public_url=self.settings.http.public_url,
            ),
            processes=admin.preview_processes,
            seconds=admin.preview_seconds,
        )

        async def broker() -> Broker:
            if self.broker is not None:
                return self.broker
            if self._console_broker is None:  # `mailer web` alone: a connection of its own
                console_broker = Broker.from_settings(self.settings.broker, name="mailer console")
                await console_broker.connect()
                self._console_broker = console_broker
            return self._console_broker

        self.admin = AdminServer(
            build_console(
                self.settings,
                self._console_pool,
                broker=broker,
                tiers=parts.tiers,
                hash_key=parts.hash_key,
                readiness=self.readiness if self.run_worker else None,
                preview=previews.preview,
                test_send=self._test_sender(parts, previews),
            ),
            http=self.settings.http,
            metrics=self.metrics,
            templates_dir=self.settings.worker.templates_dir,
        )
        with listening("admin", self.settings.admin.host, self.settings.admin.port):
            await self.admin.start()

    async def _stop_console(self) -> None:
        if self.admin is not None:
            await self.admin.stop()
            self.admin = None
        if self._console_broker is not None:
            await self._console_broker.close()
            self._console_broker = None
        if self._previews is not None:
            await self._previews.close()
            self._previews = None
        if self._console_pool is not None:
            await self._console_pool.close()
            self._console_pool = None

    async def _start_worker(
        self, parts: Parts, subscribers: Subscribers, lists: dict[str, MailingList]
    ) -> None:
        settings = self.settings
        assert self.deliveries is not None and self.pool is not None
        relay_config = await self._relay_config()
        context = tls_context(settings.smtp.ca_file)  # one for every connection of both pools
        receipt_relay = self._relay(relay_config, settings.smtp.pool_size, context)
        newsletter_relay = self._relay(relay_config, settings.newsletter.pool_size, context)
        self._test_relay = self._relay(relay_config, TEST_POOL_SIZE, context)
        self.broker = Broker.from_settings(settings.broker, name=f"mailer worker {self.worker_id}")
        await self.broker.connect()
        await self.broker.declare(round(t * 1000) for t in parts.tiers)
        retry = RetryPolicy(tiers=parts.tiers, give_up_after=settings.retry.give_up_after)
        return_path = settings.sender.return_path  # else each message's From
        return_paths = self._return_paths()  # with [bounces]: b-<token>@ per delivery

        def attempts(kind: str, relay: Relay, composer: Callable[..., bytes]) -> Attempts:
            sender = Sender(
                kind=kind,
                composer=composer,
                signer=parts.signer,
                relay=relay,
                return_path=return_path,
                metrics=self.metrics,
                return_paths=return_paths,
            )
            return Attempts(
                sender=sender,
                health=self.relay_health,
                policy=retry,
                clock=self.clock,
                captured=self.capture is not None,
            )

        self.receipts = receipts = ReceiptPipeline(
            renderer=parts.renderer,
            attempts=attempts("receipt", receipt_relay, compose),
            deliveries=self.deliveries,
            from_=parts.sender,
            hash_key=parts.hash_key,
            default_locale=settings.sender.default_locale,
            max_attachment_bytes=settings.worker.max_attachment_bytes,
            retry=retry,
            metrics=self.metrics,
            clock=self.clock,
        )
        issues = Issues(self.pool)
        intake = IssueIntake(
            issues=issues,
            lists=lists,
            renderer=parts.renderer,
            max_attachment_bytes=settings.worker.max_attachment_bytes,
        )
        self.subscriptions = SubscriptionChanges(
            subscribers=subscribers,
            jobs=Jobs(self.pool),
            broker=self.broker,
            lists=lists,
            hash_key=parts.hash_key,
            token_keys=parts.token_keys,
            public_url=settings.http.public_url,
            max_attachment_bytes=settings.worker.max_attachment_bytes,
            clock=self.clock,
        )
        throttle = Throttle(self.pool, lease=settings.worker.lease)
        await throttle.configure(settings.newsletter.rate, settings.newsletter.domains)
        signals = Signals()
        self.runner = ChunkRunner(
            deliveries=self.deliveries,
            throttle=throttle,
            attempts=attempts("newsletter", newsletter_relay, compose),
            signals=signals,
            token_keys=parts.token_keys,
            public_url=settings.http.public_url,
            default_domain_rate=settings.newsletter.default_domain_rate,
            policy=retry,
            metrics=self.metrics,
            clock=self.clock,
            feedback_sender=settings.bounces.feedback_sender,
        )
        self.dispatcher = Dispatcher(
            issues=issues,
            deliveries=self.deliveries,
            runner=self.runner,
            signals=signals,
            renderer=parts.renderer,
            lists={mailing_list.id: mailing_list for mailing_list in lists.values()},
            chunk_size=settings.newsletter.chunk_size,
            rate=settings.newsletter.rate,
            poll_interval=settings.newsletter.poll_interval,
            lease=settings.worker.lease,
        )
        self.listener = Listener(
            settings.database.url.get_secret_value(),
            {OPTOUT_CHANNEL: signals.on_optout, ISSUES_CHANNEL: signals.on_issue},
            on_reconnect=signals.on_reconnect,
        )
        await self.listener.start()
        parked = ParkedJobs(self.pool)
        parking = Parking(parked, self.broker, clock=self.clock)
        for queue_key, deliver, prefetch in (
            (
                "receipt",
                few_large_jobs(
                    receipts.deliver, slots=settings.smtp.pool_size, threshold=LARGE_MESSAGE_BYTES
                ),
                settings.broker.prefetch,
            ),
            ("newsletter", intake.accept, 4),
            ("subscription", self.subscriptions.apply, 1),  # in order, one at a time
        ):
            handler = QueueHandler(
                ROUTES[queue_key],
                deliver,
                broker=self.broker,
                parking=parking,
                metrics=self.metrics,
                unavailable_delay=parts.tiers[0],
            )
            self._consumers.append(
                await self.broker.consume(handler.queue, handler, prefetch=prefetch)
            )
        # What reaches mailer.dead (poison, or parked while the database was away) is moved
        # into the parked_jobs table.
        self.mover = DeadQueueMover(parked, clock=self.clock)
        self._consumers.append(
            await self.broker.consume(DEAD_QUEUE, self.mover, prefetch=DEAD_PREFETCH)
        )
        self._loops = [
            asyncio.create_task(self.dispatcher.run(), name=f"dispatch-{n}")
            for n in range(DISPATCH_LOOPS)
        ]
        await self._register()
        self._tasks.append(asyncio.create_task(self._heartbeat(throttle), name="heartbeat"))
        self._tasks.append(
            asyncio.create_task(self.report.run(self._stopping), name="process report")
        )

    def _start_sampling(self) -> None:
        """The gauges of /metrics that are measured, not counted (mailer/sampling.py)."""
        assert self.pool is not None
        tiers = retry_tiers(self.settings)
        sampler = Sampler(
            metrics=self.metrics,
            pool=self.pool,
            broker=self.broker,
            queues=queue_names(round(t * 1000) for t in tiers),
            interval=self.sample_interval,
            connect=lambda: Broker.from_settings(
                self.settings.broker, name=f"mailer metrics {self.worker_id}"
            ),
        )
        self._tasks.append(asyncio.create_task(sampler.run(self._stopping), name="sampling"))

    def _preview_lists(self, parts: Parts) -> dict[str, MailingList]:
        """The lists by their senders, with no database id: a preview or a test send carries
        no unsubscribe token."""
        return {
            slug: MailingList(0, slug, lst.name, parts.list_senders[slug], lst.default_locale)
            for slug, lst in self.settings.lists.items()
        }

    def _test_sender(self, parts: Parts, previews: PreviewPool) -> TestSend | None:
        """The console's test send: through the worker's relay settings (the embedded capture
        included), or in `mailer web` alone the configured relay; None without either.
        Signed like the real send; counted in no metric, recorded nowhere."""
        if self._test_relay is None:
            config = self.settings.smtp.relay()
            if config is None:
                return None
            self._test_relay = self._relay(
                config, TEST_POOL_SIZE, tls_context(self.settings.smtp.ca_file)
            )
        sender = Sender(
            kind="test",
            composer=compose,
            signer=parts.signer,
            relay=self._test_relay,
            return_path=self.settings.sender.return_path,
            metrics=Metrics(),
        )
        return pool_test_sender(
            previews, sender, public_url=self.settings.http.public_url, clock=self.clock
        )

    async def _register(self) -> None:
        """This process in the `workers` table, for operators; gone after a lease of silence."""
        assert self.pool is not None
        self.workers = Workers(self.pool)
        await self.workers.register(
            self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=VERSION,
            runs=["worker", "web"] if self.run_web else ["worker"],
            gone_after=self.settings.worker.lease,
        )

    # ---------------------------------------------------------------- bounces

    def _return_path_keys(self) -> ReturnPathKeys:
        security = self.settings.security
        return ReturnPathKeys.from_secrets(security.key(), security.retired())

    def _return_paths(self) -> Callable[[int, date], str] | None:
        domain = self.settings.bounces.domain
        if domain is None:
            return None
        keys = self._return_path_keys()
        return lambda delivery_id, day: return_path(keys, delivery_id, day, domain)

    async def _start_bounces(self, parts: Parts) -> None:
        if self.settings.bounces.domain is None:
            if self.run_bounces:
                raise ConfigError(
                    "config: [bounces] domain (MAILER_BOUNCES_DOMAIN): not set, so there is"
                    " no bounce address to receive reports for"
                )
            return
        assert self.pool is not None
        self.bounces = BounceService(
            self.settings.bounces,
            pool=self.pool,
            keys=self._return_path_keys(),
            hash_key=parts.hash_key,
            metrics=self.metrics,
            clock=self.clock,
        )
        await self.bounces.start()

    async def _relay_config(self) -> SmtpRelay:
        smtp = self.settings.smtp
        relay_config = smtp.relay()
        if relay_config is not None:
            log.info("relay %s", relay_config.display)
            return relay_config
        if not smtp.capture:
            raise ConfigError(
                "config: [smtp] url (MAILER_SMTP_URL): no relay configured; set one, or set"
                " [smtp] capture = true (MAILER_SMTP_CAPTURE) to write mail to"
                f" {smtp.capture_dir} instead of delivering it"
            )
        log.warning(
            "no relay: mail is written to %s and recorded as captured, never delivered",
            smtp.capture_dir,
        )
        self.capture = CaptureServer(smtp.capture_dir)
        await self.capture.start()
        return SmtpRelay(
            host="127.0.0.1",
            port=self.capture.port,
            implicit_tls=False,
            starttls=False,
            username=None,
            password=None,
        )

    def _relay(self, relay_config: SmtpRelay, pool_size: int, context: ssl.SSLContext) -> Relay:
        smtp = self.settings.smtp
        relay = Relay(
            relay_config,
            pool_size=pool_size,
            timeout=smtp.timeout,
            context=context,
            helo_name=smtp.helo_name,
        )
        self.relays.append(relay)
        return relay

    async def _heartbeat(self, throttle: Throttle) -> None:
        """Renew the leases on what this worker holds, so nobody takes it over. Whatever
        goes wrong is logged and shown by /readyz; the heartbeat itself goes on."""
        assert self.deliveries is not None and self.runner is not None
        interval = self.settings.worker.lease / 3
        wait = interval
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=wait)
            wait = min(interval, 0.5)  # after a failure: again soon, before the leases lapse
            try:
                await self.deliveries.renew_leases()
                await throttle.renew(self.runner.holders())
            except TemporaryFailure as exc:
                log.warning("could not renew leases: %s", exc)
                self.heartbeat.failed(str(exc))
            except Exception as exc:
                if self.heartbeat.check().ok:
                    log.exception("could not renew leases")
                else:
                    log.error("could not renew leases: %s: %s", type(exc).__name__, exc)
                self.heartbeat.failed(f"{type(exc).__name__}: {exc}")
            else:
                self.heartbeat.renewed()
                wait = interval
                await self._beat()

    async def _beat(self) -> None:
        """This process's row in `workers`: operators see it alive while this goes on."""
        if self.workers is None:
            return
        try:
            if not await self.workers.heartbeat(self.worker_id, *self.report.now()):
                await self._register()  # its row was deleted by hand
        except TemporaryFailure as exc:
            log.warning("could not record the worker heartbeat: %s", exc)
        else:
            self.metrics.heartbeat.set_to_current_time()

    def _unacked(self) -> dict[str, int]:
        return self.broker.unacked() if self.broker is not None else {}

    def owed(self) -> list[int]:
        """Deliveries whose outcome is known but not yet written."""
        owed = self.receipts.owed() if self.receipts is not None else []
        return owed + (self.runner.owed() if self.runner is not None else [])

    async def readiness(self) -> dict[str, dict[str, object]]:
        """The worker's own checks for /readyz (the database is checked by the web service)."""
        queues = dict.fromkeys((*ROUTES.values(), DEAD_QUEUE), False)
        if self.broker is not None:
            queues.update(self.broker.consumers())
        missing = [queue for queue, live in queues.items() if not live]
        node = self.broker.node if self.broker is not None else None
        checks: dict[str, dict[str, object]] = {
            "broker": {
                "ok": node is not None,
                "detail": f"connected to {node}" if node else "not connected",
            },
            "consumers": {
                "ok": not missing,
                "detail": f"no consumer on {', '.join(missing)}" if missing else "consuming",
                "queues": queues,
            },
            "relay": self.relay_health.check(),
            "heartbeat": self.heartbeat.check().as_json(),
        }
        if self.bounces is not None:
            checks["bounces"] = self.bounces.readiness()
        return checks

    async def _end_tasks(self) -> None:
        """The loops end on their own once `_stopping` is set: a moment first, so that one in
        the middle of opening or closing a connection is not cut off halfway (which leaves
        that connection's tasks behind), then the rest are cancelled."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=TASKS_GRACE)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def stop(self) -> None:
        """Drain and close; safe to call more than once."""
        self._stopping.set()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.subscriptions is not None:
            self.subscriptions.stop()
        if self.receipts is not None:
            self.receipts.stop()
        if self.mover is not None:
            self.mover.stop()
        await asyncio.gather(*(consumer.cancel() for consumer in self._consumers))
        if self.bounces is not None:
            await self.bounces.stop()
            self.bounces = None
        for relay in self.relays:
            await relay.close()
        drain = self.settings.worker.drain_timeout
        await asyncio.gather(
            *(consumer.drain(drain) for consumer in self._consumers),
            _finish(self._loops, drain),
        )
        self._consumers.clear()
        self._loops.clear()
        await self._end_tasks()
        if self.web is not None:
            await self.web.stop()
            self.web = None
        await self._stop_console()
        if self.listener is not None:
            await self.listener.stop()
            self.listener = None
        await self._release_claims()
        if self.workers is not None:
            with contextlib.suppress(TemporaryFailure):
                await self.workers.deregister(self.worker_id)
            self.workers = None
        if self.capture is not None:
            await self.capture.stop()
            self.capture = None
        if self.broker is not None:
            await self.broker.close()
            self.broker = None
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
        log.info("mailer stopped")

    async def _release_claims(self) -> None:
        """Hand back what was claimed and never tried; keep the claims of outcomes known
        but not written, so that no other worker sends those again while they are valid."""
        if self.deliveries is None:
            return
        owed = self.owed()
        if owed:
            log.error(
                "%d outcomes known but not recorded (the database is away): their claims"
                " stay until they lapse; those messages may be sent again",
                len(owed),
            )
        with contextlib.suppress(TemporaryFailure):
            released = await self.deliveries.release_unattempted(keep=owed)
            if released:
                log.info("handed back %d unfinished deliveries", released)

    async def run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await self.start()
            await stop.wait()
            log.info("signal received: draining")
        finally:
            await self.stop()


async def _finish(tasks: list[asyncio.Task[None]], drain_timeout: float) -> None:
    if not tasks:
        return
    _, late = await asyncio.wait(tasks, timeout=drain_timeout)
    for task in late:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
