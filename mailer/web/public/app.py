"""The public listener: the recipients' pages, /healthz and /readyz. Nothing else: the
operators' console and /metrics are on the [admin] listener (mailer/web/console)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from mailer.config import HttpSettings
from mailer.web import favicon
from mailer.web.listener import Listener, application
from mailer.web.public.pages import RecipientPages

MAX_BODY = 64 * 1024
Readiness = Callable[[], Awaitable[dict[str, dict[str, object]]]]


class WebServer:
    def __init__(
        self,
        settings: HttpSettings,
        *,
        readiness: Readiness,
        pages: RecipientPages | None = None,
    ) -> None:
        """`readiness`: the checks of the parts this process runs (the database's, and the
        worker's when it runs here)."""
        self._settings = settings
        self._readiness = readiness
        self._pages = pages
        self._listener: Listener | None = None

    @property
    def port(self) -> int | None:
        return self._listener.port if self._listener is not None else None

    def application(self) -> web.Application:
        if self._pages is None:
            app = application(self._settings, max_body=MAX_BODY)
        else:
            app = application(self._settings, max_body=MAX_BODY, timed_out=self._pages.timed_out)
            self._pages.add_routes(app)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        favicon.add_route(app)
        return app

    async def start(self) -> None:
        http = self._settings
        self._listener = Listener(
            self.application(), host=http.host, port=http.port, http=http, name="HTTP service"
        )
        await self._listener.start()

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        """Ready to do its work: each check says what is wrong, if anything."""
        checks = await self._readiness()
        ready = all(check["ok"] for check in checks.values())
        return web.json_response(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status=200 if ready else 503,
        )
