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
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID, uuid4

import asyncpg

from mailer.adapters import database
from mailer.adapters.broker import ROUTES, Broker, Consumer
from mailer.adapters.capture import CaptureServer
from mailer.adapters.issues import ISSUES_CHANNEL, Issues
from mailer.adapters.ledger import Ledger
from mailer.adapters.notifications import Listener
from mailer.adapters.relay import Relay, tls_context
from mailer.adapters.subscribers import OPTOUT_CHANNEL, Subscribers
from mailer.adapters.throttle import Throttle
from mailer.config import Settings, SmtpRelay
from mailer.core.audience import MailingList
from mailer.core.messages import Mailbox, compose, compose_alternative, parse_mailbox
from mailer.core.outcomes import delay_tiers
from mailer.core.rendering import Renderer
from mailer.core.signing import DkimKey, NoSigner, OpenSSLSigner, Signer, load_key
from mailer.core.tokens import TokenKeys, derive_key
from mailer.errors import ConfigError, TemporaryFailure
from mailer.metrics import Metrics
from mailer.web.app import WebServer
from mailer.web.pages import RecipientPages
from mailer.worker.consumers import QueueHandler
from mailer.worker.newsletters import Dispatcher, IssueIntake
from mailer.worker.receipts import ReceiptPipeline
from mailer.worker.sending import Sender
from mailer.worker.subscriptions import SubscriptionChanges
from mailer.worker.verdicts import RetryPolicy

log = logging.getLogger(__name__)
DISPATCH_LOOPS = 2  # chunks in hand at once per process: one sends while the other records


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
        try:
            key = load_key(path.read_bytes(), domain=dkim.domain, selector=selector)
        except OSError as exc:
            raise ConfigError(
                f"config: [dkim] {setting}: cannot read {path}: {exc.strerror}"
            ) from None
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
    metrics: Metrics = field(default_factory=Metrics)
    worker_id: UUID = field(default_factory=uuid4)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        self.capture: CaptureServer | None = None
        self.pool: asyncpg.Pool | None = None
        self.broker: Broker | None = None
        self.relays: list[Relay] = []
        self.ledger: Ledger | None = None
        self.web: WebServer | None = None
        self.listener: Listener | None = None
        self.dispatcher: Dispatcher | None = None
        self.subscriptions: SubscriptionChanges | None = None
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
        self.ledger = Ledger(self.pool, worker_id=self.worker_id, lease=settings.worker.lease)
        subscribers = Subscribers(self.pool)
        ids = await subscribers.list_ids(settings.lists)
        lists = {
            slug: MailingList(
                ids[slug], slug, lst.name, parts.list_senders[slug], lst.default_locale
            )
            for slug, lst in settings.lists.items()
        }
        if self.run_worker:
            await self._start_worker(parts, subscribers, lists)
        if self.run_web:
            pages = RecipientPages(
                subscribers=subscribers,
                lists={mailing_list.id: mailing_list for mailing_list in lists.values()},
                token_keys=parts.token_keys,
                templates_dir=settings.worker.templates_dir,
                confirm_days=settings.newsletter.confirm_days,
                invalid_token_limit=settings.http.invalid_token_limit,
                clock=self.clock,
            )
            self.web = WebServer(
                settings.http,
                pool=self.pool,
                broker=self.broker,
                metrics=self.metrics,
                pages=pages,
            )
            await self.web.start()
        log.info("mailer started worker=%s web=%s", self.run_worker, self.run_web)

    async def _start_worker(
        self, parts: Parts, subscribers: Subscribers, lists: dict[str, MailingList]
    ) -> None:
        settings = self.settings
        assert self.ledger is not None and self.pool is not None
        relay_config = await self._relay_config()
        context = tls_context(settings.smtp.ca_file)  # one for every connection of both pools
        receipt_relay = self._relay(relay_config, settings.smtp.pool_size, context)
        newsletter_relay = self._relay(relay_config, settings.newsletter.pool_size, context)
        self.broker = Broker.from_settings(settings.broker, name=f"mailer worker {self.worker_id}")
        await self.broker.connect()
        await self.broker.declare(round(t * 1000) for t in parts.tiers)
        retry = RetryPolicy(tiers=parts.tiers, give_up_after=settings.retry.give_up_after)
        return_path = settings.sender.return_path  # else each message's From

        def sender(kind: str, relay: Relay, composer: Callable[..., bytes]) -> Sender:
            return Sender(
                kind=kind,
                composer=composer,
                signer=parts.signer,
                relay=relay,
                return_path=return_path,
                metrics=self.metrics,
            )

        receipts = ReceiptPipeline(
            renderer=parts.renderer,
            sender=sender("receipt", receipt_relay, compose),
            ledger=self.ledger,
            from_=parts.sender,
            hash_key=parts.hash_key,
            default_locale=settings.sender.default_locale,
            max_attachment_bytes=settings.worker.max_attachment_bytes,
            retry=retry,
            metrics=self.metrics,
            clock=self.clock,
        )
        issues = Issues(self.pool, worker_id=self.worker_id, lease=settings.worker.lease)
        intake = IssueIntake(
            issues=issues,
            lists=lists,
            renderer=parts.renderer,
            max_attachment_bytes=settings.worker.max_attachment_bytes,
        )
        self.subscriptions = SubscriptionChanges(
            subscribers=subscribers,
            ledger=self.ledger,
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
        self.dispatcher = Dispatcher(
            issues=issues,
            throttle=throttle,
            sender=sender("newsletter", newsletter_relay, compose_alternative),
            renderer=parts.renderer,
            lists={mailing_list.id: mailing_list for mailing_list in lists.values()},
            token_keys=parts.token_keys,
            public_url=settings.http.public_url,
            chunk_size=settings.newsletter.chunk_size,
            rate=settings.newsletter.rate,
            default_domain_rate=settings.newsletter.default_domain_rate,
            poll_interval=settings.newsletter.poll_interval,
            lease=settings.worker.lease,
            retry=retry,
            metrics=self.metrics,
            clock=self.clock,
        )
        self.listener = Listener(
            settings.database.url.get_secret_value(),
            {OPTOUT_CHANNEL: self.dispatcher.on_optout, ISSUES_CHANNEL: self.dispatcher.on_issue},
            on_reconnect=self.dispatcher.on_reconnect,
        )
        await self.listener.start()
        for queue_key, deliver, prefetch in (
            ("receipt", receipts.deliver, settings.broker.prefetch),
            ("newsletter", intake.accept, 4),
            ("subscription", self.subscriptions.apply, 1),  # in order, one at a time
        ):
            handler = QueueHandler(
                ROUTES[queue_key],
                deliver,
                broker=self.broker,
                metrics=self.metrics,
                unavailable_delay=parts.tiers[0],
            )
            self._consumers.append(
                await self.broker.consume(handler.queue, handler, prefetch=prefetch)
            )
        self._loops = [
            asyncio.create_task(self.dispatcher.run(), name=f"dispatch-{n}")
            for n in range(DISPATCH_LOOPS)
        ]
        self._tasks.append(asyncio.create_task(self._heartbeat(throttle), name="heartbeat"))

    async def _relay_config(self) -> SmtpRelay:
        smtp = self.settings.smtp
        relay_config = smtp.relay()
        if relay_config is not None:
            log.info("relay %s", relay_config.display)
            return relay_config
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
        """Renew the leases on what this worker holds, so nobody takes it over."""
        assert self.ledger is not None and self.dispatcher is not None
        interval = self.settings.worker.lease / 3
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=interval)
            try:
                await self.ledger.renew_leases()
                await throttle.renew(self.dispatcher.holders())
            except TemporaryFailure as exc:
                log.warning("could not renew leases: %s", exc)

    async def stop(self) -> None:
        """Drain and close; safe to call more than once."""
        self._stopping.set()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.subscriptions is not None:
            self.subscriptions.stop()
        await asyncio.gather(*(consumer.cancel() for consumer in self._consumers))
        for relay in self.relays:
            await relay.close()
        drain = self.settings.worker.drain_timeout
        await asyncio.gather(
            *(consumer.drain(drain) for consumer in self._consumers),
            _finish(self._loops, drain),
        )
        self._consumers.clear()
        self._loops.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.web is not None:
            await self.web.stop()
            self.web = None
        if self.listener is not None:
            await self.listener.stop()
            self.listener = None
        if self.ledger is not None:
            with contextlib.suppress(TemporaryFailure):
                released = await self.ledger.release_claims()
                if released:
                    log.info("handed back %d unfinished deliveries", released)
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
