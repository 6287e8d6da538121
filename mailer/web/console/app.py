"""The [admin] listener: the operators' console, its JSON API and /metrics.

Only operators reach it (it binds to loopback by default); every page but the login and
/metrics needs a session (mailer/web/console/auth.py).
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailer.config import HttpSettings
from mailer.metrics import Metrics
from mailer.web import favicon
from mailer.web.console.auth import Guard
from mailer.web.console.context import Console
from mailer.web.console.pages import ConsolePages
from mailer.web.listener import CONSOLE_POLICY, Listener, application

MAX_BODY = 256 * 1024


@dataclass(eq=False, repr=False)
class AdminServer:
    console: Console
    _: KW_ONLY
    http: HttpSettings
    metrics: Metrics
    templates_dir: Path
    _guard: Guard = field(init=False)
    _pages: ConsolePages = field(init=False)
    _listener: Listener | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._guard = Guard(self.console.operators, self.console.settings)
        self._pages = ConsolePages(self.console, self._guard, self.templates_dir)

    @property
    def port(self) -> int | None:
        return self._listener.port if self._listener is not None else None

    def application(self) -> web.Application:
        app = application(
            self.http,
            max_body=MAX_BODY,
            policy=CONSOLE_POLICY,
            middlewares=[self._guard.middleware],
        )
        app.router.add_get("/metrics", self._metrics_page)
        self._pages.add_routes(app)
        favicon.add_route(app)
        return app

    async def start(self) -> None:
        settings = self.console.settings
        self._listener = Listener(
            self.application(),
            host=settings.host,
            port=settings.port,
            http=self.http,
            name="operators' console",
        )
        await self._listener.start()

    async def stop(self) -> None:
        await self.console.fresh.close()
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        self._guard.close()

    async def _metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )
