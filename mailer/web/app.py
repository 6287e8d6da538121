"""The HTTP service: health, readiness and metrics (and, later, the recipients' pages)."""

from __future__ import annotations

import logging

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailer.adapters import database
from mailer.adapters.broker import Broker
from mailer.config import HttpSettings
from mailer.metrics import Metrics

log = logging.getLogger(__name__)


class WebServer:
    def __init__(
        self,
        settings: HttpSettings,
        *,
        pool: asyncpg.Pool,
        broker: Broker | None,
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._broker = broker
        self._metrics = metrics
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def application(self) -> web.Application:
        app = web.Application()
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
            checks["broker"] = self._broker.is_connected
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
