"""One HTTP listener: an aiohttp application bound to a host and port, with the limits that
keep slow or hostile clients from holding it, and the headers every response carries.

Every response carries headers that keep a page from being framed, sniffed, cached or
leaking its URL (which may hold a token) in a Referer to another site; pages load nothing
from third parties.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from mailer.config import HttpSettings

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: under no-referrer browsers send `Origin: null` on the
    # form POSTs, and the pages need their origin; no URL (it holds a token) leaves the site.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# The console runs its own script (refreshing live parts) and nothing from elsewhere.
CONSOLE_POLICY = (
    "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self';"
    " img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def security_headers(policy: str = SECURITY_HEADERS["Content-Security-Policy"]) -> Middleware:
    """A middleware setting the security headers, with this Content-Security-Policy."""
    headers = {**SECURITY_HEADERS, "Content-Security-Policy": policy}

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        if not response.prepared:  # a streamed response has sent its headers already
            response.headers.update(headers)
            response.headers["Server"] = "mailer"
            response.headers.setdefault("Cache-Control", "no-store")
        if isinstance(response, web.HTTPException):
            raise response
        return response

    return middleware


class Listener:
    """Serves one application on `host:port` (port 0: any free port, then in `port`)."""

    def __init__(
        self, app: web.Application, *, host: str, port: int, http: HttpSettings, name: str
    ) -> None:
        self._app = app
        self._host = host
        self._requested_port = port
        self._http = http
        self._name = name
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        http = self._http
        # aiohttp arms keepalive_timeout at connect and after each response, and closes the
        # connection if by then no complete request head has arrived (bytes trickling in do
        # not extend it): that is the header read deadline. The pages bound the body read.
        self._runner = web.AppRunner(
            self._app,
            access_log=None,
            keepalive_timeout=http.read_timeout,
            lingering_time=http.read_timeout,
            max_line_size=http.max_line_size,
            max_field_size=http.max_field_size,
            max_headers=http.max_headers,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._requested_port)
        await site.start()
        server = site._server  # the bound port, when port 0 asked for any
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        log.info("%s on http://%s:%d", self._name, self._host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
