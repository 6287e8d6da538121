"""The HTTP service: the recipients' pages, health, readiness and metrics.

Every response carries headers that keep a page from being framed, sniffed, cached or
leaking its URL (which holds a token) in a Referer; pages load nothing from third parties.
"""

from __future__ import annotations

import logging

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailer.adapters import database
from mailer.adapters.broker import Broker
from mailer.config import HttpSettings
from mailer.metrics import Metrics
from mailer.web.pages import RecipientPages

log = logging.getLogger(__name__)


class WebServer:
    def __init__(
        self,
        settings: HttpSettings,
        *,
        pool: asyncpg.Pool,
        broker: Broker | None,
        metrics: Metrics,
        pages: RecipientPages | None = None,
    ) -> None:
        self._settings = settings
        self._pages = pages
        self._pool = pool
        self._broker = broker
        self._metrics = metrics
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def application(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024, middlewares=[_security_headers])
        if self._pages is not None:
            self._pages.add_routes(app)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.application(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._settings.host, self._settings.port)
        await site.start()
        server = site._server  # the bound port, when port 0 asked for any
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        log.info("HTTP service on http://%s:%d", self._settings.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        checks = {"database": await database.ping(self._pool)}
        if self._broker is not None:
            checks["broker"] = self._broker.ready  # connected, and every consumer live
        ready = all(checks.values())
        return web.json_response(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status=200 if ready else 503,
        )

    async def _metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )


SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    response.headers.update(SECURITY_HEADERS)
    response.headers["Server"] = "mailer"
    response.headers.setdefault("Cache-Control", "no-store")
    if isinstance(response, web.HTTPException):
        raise response
    return response
