"""Who may use the console: sessions, roles, CSRF and Origin checks, paced logins.

- A session is a random cookie (HttpOnly, SameSite=Strict, Secure when the console's origin is
  https) naming a row in PostgreSQL; logging out or a new password ends it.
- Every state-changing request (any POST but the login itself) must carry the session's CSRF
  token (form field `csrf` or header `X-CSRF-Token`) and come from the console's own origin
  (`Origin`, else `Referer`); either missing or wrong is 403 and nothing changes.
- Viewers see; only operators act.
- Every login is audited. A login takes a slot before its password is checked; an account,
  or a source (the client's address, behind a trusted proxy the one it forwards; an IPv6
  /64), holding `login_attempts` slots in 15 minutes (failed logins and those being checked)
  is refused further tries (429) without a check, until the window moves on. The checks run
  off the event loop, a few at a time in the process (mailer/web/console/hashing.py).
"""

from __future__ import annotations

import hmac
import logging
from datetime import timedelta
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from mailer.adapters.operators import Operators, Session
from mailer.config import AdminSettings
from mailer.web.console.hashing import Busy, PasswordChecks
from mailer.web.limits import source_text
from mailer.web.listener import client_of

log = logging.getLogger(__name__)
COOKIE = "mailer_console"
SESSION_KEY = web.RequestKey("session", Session)
OPEN_PATHS = frozenset(
    {"/login", "/metrics", "/static/console.css", "/static/console.js", "/favicon.ico"}
)


def source_of(request: web.Request) -> str:
    """Who a request comes from, as the audit log names it: the client's address."""
    client = client_of(request)
    return str(client) if client is not None else "unknown"


def _limited_source(request: web.Request) -> str:
    """The source a login limit counts: the client's address, or its IPv6 /64."""
    client = client_of(request)
    return source_text(client) if client is not None else "unknown"


class Guard:
    def __init__(self, operators: Operators, settings: AdminSettings) -> None:
        self._operators = operators
        self._settings = settings
        self._checks = PasswordChecks()

    def close(self) -> None:
        self._checks.close()

    def origin(self, request: web.Request) -> str:
        if self._settings.origin is not None:
            return self._settings.origin
        return f"{request.scheme}://{request.host}"

    def _secure(self, request: web.Request) -> bool:
        return self.origin(request).startswith("https://")

    def same_origin(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            referer = request.headers.get("Referer")
            if referer is None:
                return False
            parts = urlsplit(referer)
            origin = f"{parts.scheme}://{parts.netloc}"
        return origin == self.origin(request)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            if request.method == "POST" and not self.same_origin(request):
                return _refused(403, "cross-site request refused")
            return await handler(request)
        token = request.cookies.get(COOKIE)
        session = await self._operators.session(token) if token else None
        if session is None:
            if request.path.startswith("/api/") or request.method != "GET":
                return _refused(401, "log in first")
            raise web.HTTPSeeOther("/login")
        if request.method not in ("GET", "HEAD"):
            if not self.same_origin(request):
                await self._refuse_audit(request, session, "cross-site request")
                return _refused(403, "cross-site request refused")
            sent = request.headers.get("X-CSRF-Token")
            if sent is None and request.content_type in (
                "application/x-www-form-urlencoded",
                "multipart/form-data",
            ):
                sent = (await request.post()).get("csrf")  # type: ignore[assignment]
            if not isinstance(sent, str) or not hmac.compare_digest(sent, session.csrf_token):
                await self._refuse_audit(request, session, "missing or wrong CSRF token")
                return _refused(403, "missing or wrong CSRF token")
        request[SESSION_KEY] = session
        return await handler(request)

    async def _refuse_audit(self, request: web.Request, session: Session, why: str) -> None:
        await self._operators.audit(
            session.operator.name,
            f"{request.method} {request.path}",
            result="refused",
            detail=why,
            source=source_of(request),
        )

    async def login(self, name: str, password: str, request: web.Request) -> web.StreamResponse:
        source = source_of(request)
        name = name.strip().lower()[:64]
        slot = await self._operators.take_login_slot(
            name, _limited_source(request), self._settings.login_attempts
        )
        if slot is None:
            log.warning("console login refused: too many failed attempts")
            await self._operators.audit(
                name, "login", result="limited", detail="too many failed attempts", source=source
            )
            raise web.HTTPTooManyRequests(
                text="too many failed logins; try again in 15 minutes",
                headers={"Retry-After": "900"},
            )
        operator = await self._operators.find(name)
        stored = operator.password_hash if operator is not None else None
        try:
            ok = await self._checks.verify(stored, password)
        except Busy:
            await self._operators.give_back_login_slot(slot)
            log.warning("console login refused: too many password checks at once")
            raise web.HTTPServiceUnavailable(
                text="too many logins at once; try again", headers={"Retry-After": "5"}
            ) from None
        await self._operators.settle_login_slot(slot, failed=not ok)
        if not ok or operator is None:
            await self._operators.audit(
                name, "login", result="refused", detail="wrong name or password", source=source
            )
            raise web.HTTPUnauthorized(text="wrong name or password")
        token = await self._operators.open_session(
            operator,
            lifetime=timedelta(hours=self._settings.session_hours),
            source=source,
        )
        await self._operators.audit(operator.name, "login", result="done", source=source)
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="Strict",
            secure=self._secure(request),
            path="/",
            max_age=int(self._settings.session_hours * 3600),
        )
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        token = request.cookies.get(COOKIE)
        session = request.get(SESSION_KEY)
        if token:
            await self._operators.close_session(token)
        if session is not None:
            await self._operators.audit(
                session.operator.name, "logout", result="done", source=source_of(request)
            )
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        return response


def _refused(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text)


def require_operator(request: web.Request) -> Session:
    """The session, if it may act; else 403 (and the refusal is the caller's to audit)."""
    session = request[SESSION_KEY]
    if session.operator.role != "operator":
        raise web.HTTPForbidden(text="viewers may look, not act: ask an operator")
    return session
