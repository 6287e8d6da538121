"""Lifecycle: build every part from the settings, run, and stop without losing a message.

Start: capture server (when no relay is configured) → database (schema must be current)
→ broker (topology declared) → pipelines and consumers → HTTP service.
Stop (SIGTERM): stop consuming, let in-flight jobs finish (up to `drain_timeout`, the rest
return to their queue), hand back unfinished claims, close everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID, uuid4

import asyncpg

from mailer.adapters import database
from mailer.adapters.broker import ROUTES, Broker, Consumer
from mailer.adapters.capture import CaptureServer
from mailer.adapters.ledger import Ledger
from mailer.adapters.relay import Relay, tls_context
from mailer.config import Settings, SmtpRelay
from mailer.core.messages import Mailbox, parse_mailbox
from mailer.core.outcomes import delay_tiers
from mailer.core.rendering import Renderer
from mailer.core.signing import DkimKey, NoSigner, OpenSSLSigner, Signer, load_key
from mailer.core.tokens import derive_key
from mailer.errors import ConfigError, TemporaryFailure
from mailer.metrics import Metrics
from mailer.web.app import WebServer
from mailer.worker.consumers import QueueHandler
from mailer.worker.pipeline import ReceiptPipeline, RetryPolicy

log = logging.getLogger(__name__)


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


def sender_mailbox(settings: Settings) -> Mailbox:
    try:
        return parse_mailbox(settings.sender.from_)
    except ValueError as exc:
        raise ConfigError(f"config: [sender] from (MAILER_SENDER_FROM): {exc}") from None


@dataclass(frozen=True, slots=True)
class Parts:
    """What the worker builds from the settings alone, checked before any connection."""

    renderer: Renderer
    signer: Signer
    sender: Mailbox
    hash_key: bytes
    tiers: tuple[float, ...]


def build_parts(settings: Settings) -> Parts:
    try:
        renderer = Renderer(settings.worker.templates_dir)
    except ValueError as exc:
        raise ConfigError(f"config: [worker] templates_dir: {exc}") from None
    if "receipt" not in renderer.names:
        raise ConfigError(
            f"config: [worker] templates_dir: {settings.worker.templates_dir} has no receipt "
            "template"
        )
    return Parts(
        renderer=renderer,
        signer=load_signer(settings),
        sender=sender_mailbox(settings),
        hash_key=derive_key(settings.security.key(), "address"),
        tiers=retry_tiers(settings),
    )


@dataclass
class Service:
    settings: Settings
    run_worker: bool = True
    run_web: bool = True
    metrics: Metrics = field(default_factory=Metrics)
    worker_id: UUID = field(default_factory=uuid4)

    def __post_init__(self) -> None:
        self.capture: CaptureServer | None = None
        self.pool: asyncpg.Pool | None = None
        self.broker: Broker | None = None
        self.relay: Relay | None = None
        self.ledger: Ledger | None = None
        self.web: WebServer | None = None
        self._consumers: list[Consumer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        settings = self.settings
        parts = build_parts(settings) if self.run_worker else None
        self.pool = await database.open_pool(
            settings.database.url.get_secret_value(), size=settings.database.pool_size
        )
        self.ledger = Ledger(self.pool, worker_id=self.worker_id, lease=settings.worker.lease)
        if parts is not None:
            await self._start_worker(parts)
        if self.run_web:
            self.web = WebServer(
                settings.http, pool=self.pool, broker=self.broker, metrics=self.metrics
            )
            await self.web.start()
        log.info("mailer started worker=%s web=%s", self.run_worker, self.run_web)

    async def _start_worker(self, parts: Parts) -> None:
        settings = self.settings
        assert self.ledger is not None
        self.relay = await self._open_relay()
        self.broker = Broker(
            settings.broker.url.get_secret_value(), publish_timeout=settings.broker.publish_timeout
        )
        await self.broker.connect()
        tiers = parts.tiers
        await self.broker.declare(round(t * 1000) for t in tiers)
        receipts = ReceiptPipeline(
            renderer=parts.renderer,
            signer=parts.signer,
            relay=self.relay,
            ledger=self.ledger,
            sender=parts.sender,
            return_path=settings.sender.return_path or parts.sender.address,
            hash_key=parts.hash_key,
            default_locale=settings.sender.default_locale,
            max_attachment_bytes=settings.worker.max_attachment_bytes,
            retry=RetryPolicy(tiers=tiers, give_up_after=settings.retry.give_up_after),
            metrics=self.metrics,
            clock=lambda: datetime.now(UTC),
        )
        handler = QueueHandler(
            ROUTES["receipt"],
            receipts.deliver,
            broker=self.broker,
            metrics=self.metrics,
            unavailable_delay=tiers[0],
        )
        self._consumers.append(
            await self.broker.consume(handler.queue, handler, prefetch=settings.broker.prefetch)
        )
        self._tasks.append(asyncio.create_task(self._renew_leases(), name="renew-leases"))

    async def _open_relay(self) -> Relay:
        smtp = self.settings.smtp
        relay_config = smtp.relay()
        if relay_config is None:
            self.capture = CaptureServer(smtp.capture_dir)
            await self.capture.start()
            relay_config = SmtpRelay(
                host="127.0.0.1",
                port=self.capture.port,
                implicit_tls=False,
                starttls=False,
                username=None,
                password=None,
            )
        else:
            log.info("relay %s", relay_config.display)
        return Relay(
            relay_config,
            pool_size=smtp.pool_size,
            timeout=smtp.timeout,
            context=tls_context(smtp.ca_file),
            helo_name=smtp.helo_name,
        )

    async def _renew_leases(self) -> None:
        assert self.ledger is not None
        interval = self.settings.worker.lease / 3
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=interval)
            try:
                await self.ledger.renew_leases()
            except TemporaryFailure as exc:
                log.warning("could not renew leases: %s", exc)

    async def stop(self) -> None:
        """Drain and close; safe to call more than once.

        Consumers stop taking messages; the relay refuses new transactions, so a job that has
        not reached the relay goes straight back to its queue, while one in the middle of an
        SMTP transaction finishes and is recorded.
        """
        self._stopping.set()
        await asyncio.gather(*(consumer.cancel() for consumer in self._consumers))
        if self.relay is not None:
            await self.relay.close()
        drain = self.settings.worker.drain_timeout
        await asyncio.gather(*(consumer.drain(drain) for consumer in self._consumers))
        self._consumers.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.web is not None:
            await self.web.stop()
            self.web = None
        if self.ledger is not None:
            with contextlib.suppress(TemporaryFailure):
                released = await self.ledger.release_claims()
                if released:
                    log.info("handed back %d unfinished deliveries", released)
        if self.capture is not None:
            await self.capture.stop()
        if self.broker is not None:
            await self.broker.close()
        if self.pool is not None:
            await self.pool.close()
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
