"""The operators' console built from the settings: its own small pool, the processes its
previews and test sends render in, the relay of its test sends, and its way to the broker."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from datetime import datetime

from mailer.adapters.broker import Broker
from mailer.adapters.relay import Relay
from mailer.assembly.prepared import Prepared
from mailer.assembly.worker import relay_pool
from mailer.config import Settings, SmtpRelay
from mailer.core.audience import MailingList
from mailer.core.messages import compose
from mailer.core.trials import TestSend
from mailer.metrics import Metrics
from mailer.parts import Readiness
from mailer.parts.console import BrokerOfItsOwn, Closing, OperatorsConsole
from mailer.parts.database import Database
from mailer.web.console.app import AdminServer
from mailer.web.console.setup import build_console
from mailer.worker.preview_pool import PreviewPool, PreviewSetup, pool_test_sender
from mailer.worker.sending import Sender

CONSOLE_POOL_SIZE = 2  # database connections for the console's reads
TEST_POOL_SIZE = 2  # relay connections for the console's test sends


def operators_console(
    settings: Settings,
    prepared: Prepared,
    *,
    broker: Broker | None,
    relay: SmtpRelay | None,
    context: ssl.SSLContext,
    readiness: Readiness | None,
    metrics: Metrics,
    clock: Callable[[], datetime],
) -> OperatorsConsole:
    """`broker`: the worker's connection, when it runs here (else the console makes one of
    its own on first use); `relay`: the worker's (the embedded capture included) or, in
    `mailer web` alone, the configured one: None, no test sends; `readiness`: the worker's
    own checks, when it runs here."""
    database = Database(settings.database, size=CONSOLE_POOL_SIZE, name="console database")
    admin = settings.admin
    previews = PreviewPool(
        PreviewSetup(
            lists=_preview_lists(settings, prepared),
            templates_dir=settings.worker.templates_dir,
            max_attachment_bytes=settings.worker.max_attachment_bytes,
            public_url=settings.http.public_url,
        ),
        processes=admin.preview_processes,
        seconds=admin.preview_seconds,
    )
    closing: list[Closing] = []
    test_send: TestSend | None = None
    if relay is not None:
        test_relay = relay_pool(settings, relay, TEST_POOL_SIZE, context)
        closing.append(test_relay)
        test_send = _test_sender(settings, prepared, previews, test_relay, clock)
    reach: Callable[[], Awaitable[Broker]]
    if broker is not None:
        reach = _given(broker)
    else:  # `mailer web` alone: a connection of its own
        own = BrokerOfItsOwn(lambda: Broker.from_settings(settings.broker, name="mailer console"))
        closing.append(own)
        reach = own
    closing.append(previews)
    console = build_console(
        settings,
        database.pool,
        broker=reach,
        tiers=prepared.tiers,
        hash_key=prepared.hash_key,
        readiness=readiness,
        preview=previews.preview,
        test_send=test_send,
    )
    server = AdminServer(
        console, http=settings.http, metrics=metrics, templates_dir=settings.worker.templates_dir
    )
    return OperatorsConsole(server, admin, database=database, closing=closing)


def _given(broker: Broker) -> Callable[[], Awaitable[Broker]]:
    async def reach() -> Broker:
        return broker

    return reach


def _preview_lists(settings: Settings, prepared: Prepared) -> dict[str, MailingList]:
    """The lists by their senders, with no database id: a preview or a test send carries
    no unsubscribe token."""
    return {
        slug: MailingList(0, slug, lst.name, prepared.list_senders[slug], lst.default_locale)
        for slug, lst in settings.lists.items()
    }


def _test_sender(
    settings: Settings,
    prepared: Prepared,
    previews: PreviewPool,
    relay: Relay,
    clock: Callable[[], datetime],
) -> TestSend:
    """Signed like the real send; counted in no metric, recorded nowhere."""
    sender = Sender(
        kind="test",
        composer=compose,
        signer=prepared.signer,
        relay=relay,
        return_path=settings.sender.return_path,
        metrics=Metrics(),
    )
    return pool_test_sender(previews, sender, public_url=settings.http.public_url, clock=clock)
