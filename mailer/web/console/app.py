"""The [admin] listener: the operators' console, its JSON API and /metrics.

Only operators reach it (it binds to loopback by default); every page but the login and
/metrics needs a session (mailer/web/console/auth.py).
"""

from __future__ import annotations

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


class AdminServer:
    def __init__(
        self,
        console: Console,
        *,
        http: HttpSettings,
        metrics: Metrics,
        templates_dir: Path,
    ) -> None:
        self._console = console
        self._http = http
        self._metrics = metrics
        self._guard = Guard(console.operators, console.settings)
        self._pages = ConsolePages(console, self._guard, templates_dir)
        self._listener: Listener | None = None

    @property
    def port(self) -> int | None:
        return self._listener.port if self._listener is not None else None

    def application(self) -> web.Application:
        app = application(
            self._http,
            max_body=MAX_BODY,
            policy=CONSOLE_POLICY,
            middlewares=[self._guard.middleware],
        )
        app.router.add_get("/metrics", self._metrics_page)
        self._pages.add_routes(app)
        favicon.add_route(app)
        return app

    async def start(self) -> None:
        settings = self._console.settings
        self._listener = Listener(
            self.application(),
            host=settings.host,
            port=settings.port,
            http=self._http,
            name="operators' console",
        )
        await self._listener.start()

    async def stop(self) -> None:
        await self._console.fresh.close()
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        self._guard.close()

    async def _metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )
