"""One HTTP listener: an aiohttp application bound to a host and port, with the limits that
keep slow or hostile clients from holding it, and the headers every response carries. The
public listener and the operators' console are both built here, so both have every limit:

- the request head must arrive within `read_timeout` of the connection (or of the previous
  response), and within `max_line_size`, `max_field_size` and `max_headers`;
- its body within `read_timeout` once the head is in (else 408), and within the
  application's `max_body` (else 413);
- at most `max_connections` connections are open at once; one more is answered 503 and
  closed, before anything of it is read;
- the client is the peer, or behind one of `trusted_proxies` the address it forwards
  (mailer/web/limits.py);
- a request aiohttp cannot parse, which any client can send, is one fixed log line with no
  traceback and nothing the client wrote.

Every response carries headers that keep a page from being framed, sniffed, cached or
leaking its URL (which may hold a token) in a Referer to another site; pages load nothing
from third parties.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware

from mailer.config import HttpSettings
from mailer.web.limits import Address, ClientAddresses

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
CLIENT: web.RequestKey[Address | None] = web.RequestKey("client")
FULL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 34\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    b"too many connections; try again.\r\n"
)
FULL_LOG_EVERY = 60.0  # seconds between two log lines about refused connections

TimedOut = Callable[[web.Request], web.StreamResponse]


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


def client_address(clients: ClientAddresses) -> Middleware:
    """A middleware finding who a request comes from, once, for `client_of`."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[CLIENT] = clients.client(
            request.remote, request.headers.getall("X-Forwarded-For", [])
        )
        return await handler(request)

    return middleware


def client_of(request: web.Request) -> Address | None:
    """The client's address (None: the peer has none, e.g. a Unix socket)."""
    return request.get(CLIENT)


def _timed_out(request: web.Request) -> web.StreamResponse:
    return web.Response(status=408, text="the request's body did not arrive in time")


def read_body(timeout: float, timed_out: TimedOut = _timed_out) -> Middleware:
    """A middleware reading a request's whole body before its handler runs, within
    `timeout` (else `timed_out`'s answer, and the connection is closed) and within the
    application's client_max_size (else 413). The handlers' `read()`, `post()` and `json()`
    then answer from what was read, and never wait on the client."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.body_exists:
            try:
                async with asyncio.timeout(timeout):
                    if request.content_type == "multipart/form-data":
                        await request.post()  # kept; read() would leave post() nothing
                    else:
                        await request.read()
            except TimeoutError:
                response = timed_out(request)
                response.force_close()
                return response
            except ValueError:  # a multipart body that is not one
                raise web.HTTPBadRequest(text="the form could not be read") from None
        return await handler(request)

    return middleware


def application(
    http: HttpSettings,
    *,
    max_body: int,
    policy: str = SECURITY_HEADERS["Content-Security-Policy"],
    timed_out: TimedOut = _timed_out,
    middlewares: Sequence[Middleware] = (),
) -> web.Application:
    """An application whose requests go through what every listener needs (the security
    headers, the client's address, the body read in time) before `middlewares`."""
    return web.Application(
        client_max_size=max_body,
        middlewares=[
            security_headers(policy),
            client_address(ClientAddresses(http.proxy_networks())),
            read_body(http.read_timeout, timed_out),
            *middlewares,
        ],
    )


class _ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """What aiohttp logs of a connection. A request it could not parse becomes one fixed
    line: its traceback would repeat the request line, which the client wrote; any client
    can send one, so it is no error of ours either. Our own errors keep their traceback."""

    def __init__(self, logger: logging.Logger, listener: str) -> None:
        super().__init__(logger)
        self._listener = listener

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        error = sys.exc_info()[1] if exc_info is True else exc_info
        if isinstance(error, HttpProcessingError):
            self.logger.info(
                "%s: a request that could not be read was refused (%s, HTTP %s)",
                self._listener,
                type(error).__name__,
                error.code,
            )
            return
        super().log(level, msg, *args, **kwargs)


class _Full(asyncio.Protocol):
    """A connection over the cap: answered 503 at once and closed, nothing read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(FULL)
        transport.close()


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
        self._server: asyncio.Server | None = None
        self._refused_logged_at = -FULL_LOG_EVERY
        self.port: int | None = None

    async def start(self) -> None:
        http = self._http
        # aiohttp arms keepalive_timeout at connect and after each response, and closes the
        # connection if by then no complete request head has arrived (bytes trickling in do
        # not extend it): that is the header read deadline. read_body bounds the body.
        self._runner = web.AppRunner(
            self._app,
            access_log=None,
            keepalive_timeout=http.read_timeout,
            lingering_time=http.read_timeout,
            max_line_size=http.max_line_size,
            max_field_size=http.max_field_size,
            max_headers=http.max_headers,
            logger=_ServerLog(log, self._name),
        )
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        cap = http.max_connections

        def connection() -> asyncio.BaseProtocol:
            # aiohttp's count of open connections: a burst accepted in one turn of the
            # event loop is counted when its first connection starts, so it may pass the
            # cap by that burst (the listen backlog at most), never for long.
            if len(server.connections) >= cap:
                self._refusing()
                return _Full()
            return server()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(connection, self._host, self._requested_port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("%s on http://%s:%d", self._name, self._host, self.port)

    def _refusing(self) -> None:
        now = time.monotonic()
        if now - self._refused_logged_at >= FULL_LOG_EVERY:
            self._refused_logged_at = now
            log.warning(
                "%s: %d connections open, the most allowed; refusing more with 503",
                self._name,
                self._http.max_connections,
            )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()  # no new connections; the runner closes the open ones
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
