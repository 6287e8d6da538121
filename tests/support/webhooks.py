"""A webhook receiver (aiohttp over TLS on loopback) that verifies every request with the
Standard Webhooks reference library, answers as the test tells it, and records what it took;
and events written to the outbox as the mail path writes them, then sequenced as the relay
leader does."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from mailer.adapters import outbox
from mailer.core.events import EventType
from tests.support.tls import Pki, make_pki

Behaviour = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Request:
    at: float  # time.monotonic()
    webhook_id: str
    events: list[dict[str, Any]]
    verified: list[str]  # the secrets (of those the receiver holds) that verify it


@dataclass
class Receiver:
    pki: Pki
    secrets: list[str] = field(default_factory=list)  # set once registered
    signed: bool = True  # False: takes unsigned requests (tests of the HTTP client alone)
    answer: int = 200
    behaviour: Behaviour | None = None  # instead of `answer`
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/hooks"

    def taken(self) -> list[dict[str, Any]]:
        """Events of the requests answered 2xx, in the order they came."""
        return [event for request in self.requests for event in request.events]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self._take)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.pki.server_context())
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _take(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = dict(request.headers)
        verified = []
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            verified.append(secret)
        if self.signed and not verified:
            return web.Response(status=401, text="bad signature")
        if self.behaviour is not None:
            response = await self.behaviour(request)
        else:
            response = web.Response(status=self.answer)
        if 200 <= response.status < 300:
            self.requests.append(
                Request(
                    time.monotonic(),
                    request.headers.get("webhook-id", ""),
                    json.loads(body)["events"] if self.signed else [],
                    verified,
                )
            )
        return response


async def publish_events(
    database_url: str,
    count: int,
    *,
    account: str = "default",
    type_: EventType = "message.delivered",
) -> list[str]:
    """`count` events of `account`, committed and sequenced; their ids, in order."""
    conn = await asyncpg.connect(database_url)
    try:
        events = [
            outbox.event(type_, account=account, recipient=f"r{n}@example.pl", kind="receipt")
            for n in range(count)
        ]
        async with conn.transaction():
            await outbox.append(conn, events)
        while await outbox.sequence(conn, 1000):
            pass
    finally:
        await conn.close()
    return [str(e.id) for e in events]


@pytest.fixture(scope="session")
def webhook_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA and a certificate for 127.0.0.1, for the receivers; `[webhooks] ca_file` trusts it."""
    return make_pki(tmp_path_factory.mktemp("webhook-pki"))


@pytest.fixture
async def receiver(webhook_pki: Pki) -> AsyncIterator[Receiver]:
    one = Receiver(webhook_pki)
    await one.start()
    yield one
    await one.stop()


def webhooks_section(pki: Pki) -> dict[str, Any]:
    """[webhooks] for a test: its loopback receivers allowed and trusted, short delays."""
    return {
        "allow": ["127.0.0.1/32"],
        "ca_file": str(pki.ca_file),
        "first_delay": 0.2,
        "max_delay": 0.8,
        "poll_interval": 0.05,
        "timeout": 5,
    }
