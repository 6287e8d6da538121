"""What every console page shares: templates, the session's values, forms (urlencoded or
JSON), JSON answers, and the audited running of an action."""

from __future__ import annotations

import dataclasses
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import jinja2
from aiohttp import web

from mailer.core.times import duration, when
from mailer.errors import MailerError
from mailer.web.console.auth import SESSION_KEY, Guard, require_operator, source_of
from mailer.web.console.context import Console
from mailer.web.listener import CONSOLE_POLICY, SECURITY_HEADERS

log = logging.getLogger(__name__)


def _default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(type(value).__name__)


def json_response(data: object, status: int = 200) -> web.Response:
    return web.json_response(
        data, status=status, dumps=lambda v: json.dumps(v, default=_default, ensure_ascii=False)
    )


def ago(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "never"
    return f"{duration((now - at).total_seconds())} ago"


def moment(at: datetime | None) -> str:
    return when(at, "—")


def stream_headers() -> dict[str, str]:
    """For a streamed page, whose headers go out before any middleware could add them."""
    return {
        **SECURITY_HEADERS,
        "Content-Security-Policy": CONSOLE_POLICY,
        "Cache-Control": "no-store",
        "Server": "mailer",
    }


def templates(templates_dir: Path) -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir / "_console")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        auto_reload=False,
    )
    environment.filters["ago"] = ago
    environment.filters["when"] = moment
    environment.filters["duration"] = duration
    return environment


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """A page's method, path and handler; `api`: the path it also answers at in JSON."""

    method: str
    path: str
    handler: Handler
    api: str | None = None


def get(path: str, handler: Handler, *, api: bool | str = False) -> Route:
    """`api=True`: also at /api<path> (or at the path given)."""
    return Route("GET", path, handler, _api_path(path, api))


def post(path: str, handler: Handler, *, api: bool = False) -> Route:
    return Route("POST", path, handler, _api_path(path, api))


def _api_path(path: str, api: bool | str) -> str | None:
    if isinstance(api, str):
        return api
    return f"/api{path}" if api else None


class Pages(ABC):
    """Base of each area's pages."""

    def __init__(self, console: Console, guard: Guard, env: jinja2.Environment) -> None:
        self._c = console
        self._guard = guard
        self._env = env

    @abstractmethod
    def routes(self) -> list[Route]: ...

    def add_routes(self, app: web.Application) -> None:
        for route in self.routes():
            for path in (route.path, route.api):
                if path is not None:
                    app.router.add_route(route.method, path, route.handler)

    def _render(
        self, request: web.Request, template: str, http_status: int = 200, **values: Any
    ) -> web.Response:
        session = request.get(SESSION_KEY)
        html = self._env.get_template(template).render(
            operator=session.operator if session else None,
            csrf=session.csrf_token if session else "",
            refresh=self._c.settings.refresh_seconds,
            path=request.path,
            **values,
        )
        return web.Response(text=html, status=http_status, content_type="text/html")

    @staticmethod
    def _api(request: web.Request) -> bool:
        return request.path.startswith("/api/")

    def _answer(
        self, request: web.Request, template: str, data: Mapping[str, Any], **page: Any
    ) -> web.Response:
        """`data` as JSON under /api/, else the page: `data` and what only the page shows."""
        if self._api(request):
            return json_response(data)
        return self._render(request, template, **page, **data)

    def _result(self, request: web.Request, done: bool, outcome: str, back: str) -> web.Response:
        """What an action did: {"ok", "result"} under /api/, else the result page (409 when
        it was refused)."""
        status = 200 if done else 409
        if self._api(request):
            return json_response({"ok": done, "result": outcome}, status=status)
        return self._render(
            request, "result.html.j2", http_status=status, ok=done, text=outcome, back=back
        )

    async def _form(self, request: web.Request) -> Mapping[str, Any]:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except (ValueError, RecursionError):
                raise web.HTTPBadRequest(text="the body is not JSON") from None
            if not isinstance(body, dict):
                raise web.HTTPBadRequest(text="the body is not a JSON object")
            return body
        form = await request.post()
        return {"refs": form.getall("ref", []), **{k: v for k, v in form.items() if k != "ref"}}

    async def _operator(self, request: web.Request, action: str, target: str) -> None:
        """Go on only as an operator: a viewer's refusal (403) is audited, whether asking to
        act or only for the confirmation page."""
        try:
            require_operator(request)
        except web.HTTPForbidden:
            await self._c.operators.audit(
                request[SESSION_KEY].operator.name,
                action,
                target=target,
                result="refused",
                detail="viewer",
                source=source_of(request),
            )
            raise

    async def _act(
        self,
        request: web.Request,
        action: str,
        target: str,
        run: Callable[[], Awaitable[str]],
    ) -> tuple[bool, str]:
        """Check the role, run, audit; (done, what happened)."""
        await self._operator(request, action, target)
        source = source_of(request)
        name = request[SESSION_KEY].operator.name
        try:
            outcome = await run()
        except (LookupError, ValueError, MailerError) as exc:
            await self._c.operators.audit(
                name, action, target=target, result="failed", detail=str(exc), source=source
            )
            return False, str(exc)
        self._c.fresh.forget()
        await self._c.operators.audit(
            name, action, target=target, result="done", detail=outcome, source=source
        )
        log.info("console: %s %s by %s: %s", action, target, name, outcome)
        return True, outcome
