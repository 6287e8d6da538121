"""The console's pages and JSON API: overview, issues, receipts, dead letters,
suppressions and lists, audit. Server-rendered (Jinja2, autoescaped); a small script of our
own refreshes the live parts, and every page works without it.

Every action (pause, resume, cancel, requeue, purge, lift or add a suppression) asks for a
confirmation first, needs the operator role, and is audited with its result, refusals too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import jinja2
from aiohttp import web

from mailer.adapters.broker import DeadLetters, body_ref
from mailer.adapters.ledger_views import OUTCOMES
from mailer.adapters.queues import QueueDepth, depths
from mailer.core.addresses import InvalidAddress, address_key, normalize_address
from mailer.errors import MailerError, TemporaryFailure
from mailer.web.console.auth import SESSION_KEY, Guard, require_operator, source_of
from mailer.web.console.charts import sends_chart
from mailer.web.console.context import Console
from mailer.web.console.masking import masked_headers, pretty_body
from mailer.web.listener import CONSOLE_POLICY, SECURITY_HEADERS

log = logging.getLogger(__name__)
ISSUE_ACTIONS = ("pause", "resume", "cancel")
DEAD_ACTIONS = ("requeue", "purge")
DEAD_SHOWN = 200
STATIC = ("console.css", "console.js")


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


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(
        data, status=status, dumps=lambda v: json.dumps(v, default=_default, ensure_ascii=False)
    )


def _ago(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "never"
    seconds = max(0, int((now - at).total_seconds()))
    if seconds < 90:
        return f"{seconds} s ago"
    if seconds < 5400:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


class ConsolePages:
    def __init__(self, console: Console, guard: Guard, templates_dir: Path) -> None:
        self._c = console
        self._guard = guard
        folder = templates_dir / "_console"
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(folder)),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            auto_reload=False,
        )
        self._env.filters["ago"] = _ago
        self._env.filters["when"] = lambda at: (
            at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at else "—"
        )
        self._static = {name: (folder / name).read_bytes() for name in STATIC}

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/login", self._login_page)
        r.add_post("/login", self._login)
        r.add_post("/logout", self._guard.logout)
        r.add_get("/", self._overview)
        r.add_get("/api/overview", self._overview)
        r.add_get("/issues", self._issues)
        r.add_get("/api/issues", self._issues)
        r.add_get("/issues/{id}", self._issue)
        r.add_get("/api/issues/{id}", self._issue)
        r.add_post("/issues/{id}/{action}", self._issue_action)
        r.add_post("/api/issues/{id}/{action}", self._issue_action)
        r.add_get("/receipts", self._receipts)
        r.add_get("/api/receipts", self._receipts)
        r.add_post("/receipts", self._receipts)  # a typed address travels in the body only
        r.add_get("/dead", self._dead)
        r.add_get("/api/dead", self._dead)
        r.add_get("/dead/{ref}", self._dead_one)
        r.add_post("/dead/{action}", self._dead_action)
        r.add_post("/api/dead/{action}", self._dead_action)
        r.add_get("/suppressions", self._suppressions)
        r.add_post("/suppressions", self._suppressions)
        r.add_post("/suppressions/{action}", self._suppression_action)
        r.add_get("/audit", self._audit)
        r.add_get("/api/audit", self._audit)
        for name in STATIC:
            r.add_get(f"/static/{name}", self._static_file)

    # Rendering --------------------------------------------------------------------------

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

    async def _static_file(self, request: web.Request) -> web.Response:
        name = request.path.rsplit("/", 1)[1]
        kind = "text/css" if name.endswith(".css") else "text/javascript"
        return web.Response(
            body=self._static[name],
            content_type=kind,
            headers={"Cache-Control": "max-age=300"},
        )

    @staticmethod
    def _api(request: web.Request) -> bool:
        return request.path.startswith("/api/")

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

    # Login ------------------------------------------------------------------------------

    async def _login_page(self, request: web.Request) -> web.Response:
        return self._render(request, "login.html.j2", error=None)

    async def _login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        name, password = form.get("name"), form.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            return self._render(
                request, "login.html.j2", http_status=400, error="name and password"
            )
        try:
            return await self._guard.login(name, password, request)
        except web.HTTPUnauthorized:
            return self._render(
                request, "login.html.j2", http_status=401, error="wrong name or password"
            )
        except web.HTTPTooManyRequests:
            return self._render(
                request,
                "login.html.j2",
                http_status=429,
                error="too many failed logins; try again in 15 minutes",
            )

    # Audit of actions -------------------------------------------------------------------

    async def _act(
        self,
        request: web.Request,
        action: str,
        target: str,
        run: Callable[[], Awaitable[str]],
    ) -> tuple[bool, str]:
        """Check the role, run, audit; (done, what happened)."""
        session = request[SESSION_KEY]
        source = source_of(request)
        name = session.operator.name
        try:
            require_operator(request)
        except web.HTTPForbidden:
            await self._c.operators.audit(
                name, action, target=target, result="refused", detail="viewer", source=source
            )
            raise
        try:
            outcome = await run()
        except (LookupError, ValueError, MailerError) as exc:
            await self._c.operators.audit(
                name, action, target=target, result="failed", detail=str(exc), source=source
            )
            return False, str(exc)
        await self._c.operators.audit(
            name, action, target=target, result="done", detail=outcome, source=source
        )
        log.info("console: %s %s by %s: %s", action, target, name, outcome)
        return True, outcome

    # Overview ---------------------------------------------------------------------------

    async def _queues(self) -> tuple[list[QueueDepth], str | None]:
        try:
            broker = await self._c.broker()
            return await depths(broker, self._c.queue_names), None
        except (MailerError, OSError, TimeoutError, RuntimeError) as exc:
            return [], f"broker unreachable: {exc}"

    async def _overview_data(self) -> dict[str, Any]:
        views = self._c.views
        now = await views.now()
        counts, active, (queues, broker_error), worker = await asyncio.gather(
            views.sends_per_minute(60),
            views.issues(active_only=True, limit=20),
            self._queues(),
            self._c.readiness() if self._c.readiness is not None else _none(),
        )
        paces = await asyncio.gather(*(views.pace(i.id) for i in active))
        return {
            "measured_at": now,
            "minutes": counts,
            "active_issues": [
                {"issue": issue, "pace": pace} for issue, pace in zip(active, paces, strict=True)
            ],
            "queues": queues,
            "broker_error": broker_error,
            "worker": worker,
            "database": {"ok": True, "detail": "reachable", "measured_at": now},
        }

    async def _overview(self, request: web.Request) -> web.Response:
        data = await self._overview_data()
        if self._api(request):
            return _json(data)
        chart, legend = sends_chart(data["minutes"], now=data["measured_at"])
        return self._render(request, "overview.html.j2", chart=chart, legend=legend, **data)

    # Issues -----------------------------------------------------------------------------

    async def _issues(self, request: web.Request) -> web.Response:
        issues = await self._c.views.issues(limit=200)
        now = await self._c.views.now()
        if self._api(request):
            return _json({"measured_at": now, "issues": issues})
        return self._render(
            request, "issues.html.j2", issues=issues, measured_at=now, outcomes=OUTCOMES
        )

    def _issue_id(self, request: web.Request) -> UUID:
        try:
            return UUID(request.match_info["id"])
        except ValueError:
            raise web.HTTPNotFound(text="no such issue") from None

    async def _issue(self, request: web.Request) -> web.Response:
        issue_id = self._issue_id(request)
        views = self._c.views
        issue = await views.issue(issue_id)
        if issue is None:
            raise web.HTTPNotFound(text="no such issue")
        pace, domains, failures = await asyncio.gather(
            views.pace(issue_id), views.domains(issue_id), views.failures(issue_id)
        )
        data: dict[str, Any] = {
            "measured_at": pace.measured_at,
            "issue": issue,
            "pace": pace,
            "stalled": pace.stalled(issue.state),
            "domains": domains,
            "failures": failures,
        }
        if self._api(request):
            return _json(data)
        return self._render(request, "issue.html.j2", outcomes=OUTCOMES, **data)

    async def _issue_action(self, request: web.Request) -> web.Response:
        issue_id = self._issue_id(request)
        action = request.match_info["action"]
        if action not in ISSUE_ACTIONS:
            raise web.HTTPNotFound(text="no such action")
        form = await self._form(request)
        api = self._api(request)
        if not api and form.get("confirm") != "yes":
            require_operator(request)
            issue = await self._c.views.issue(issue_id)
            if issue is None:
                raise web.HTTPNotFound(text="no such issue")
            return self._render(
                request,
                "confirm.html.j2",
                question=f"{action.capitalize()} issue “{issue.subject}” ({issue.state})?",
                action_url=request.path,
                fields={},
                button=action,
                back=f"/issues/{issue_id}",
            )
        literal: Literal["pause", "resume", "cancel"] = action  # type: ignore[assignment]

        async def run() -> str:
            before, after = await self._c.issues.set_state(issue_id, literal)
            if before is None:
                raise LookupError(f"no issue {issue_id}")
            if after is None:
                raise ValueError(f"issue is {before}: cannot {action} it")
            return f"{before} → {after}"

        done, outcome = await self._act(request, f"issue {action}", str(issue_id), run)
        if api:
            return _json({"done": done, "result": outcome}, status=200 if done else 409)
        if not done:
            return self._render(
                request,
                "result.html.j2",
                http_status=409,
                ok=False,
                text=outcome,
                back=f"/issues/{issue_id}",
            )
        raise web.HTTPSeeOther(f"/issues/{issue_id}")

    # Receipts ---------------------------------------------------------------------------

    async def _receipts(self, request: web.Request) -> web.Response:
        views = self._c.views
        query = request.query
        job: UUID | None = None
        error = None
        recipient_key = None
        looked_up = None
        if query.get("job"):
            try:
                job = UUID(query["job"].strip())
            except ValueError:
                error = "not a job id (a UUID)"
        if request.method == "POST":
            form = await self._form(request)
            typed = form.get("address")
            if isinstance(typed, str) and typed.strip():
                try:
                    normalized = normalize_address(typed.strip())
                except (InvalidAddress, ValueError):
                    error = "not an e-mail address"
                else:
                    recipient_key = address_key(self._c.hash_key, normalized)
                    looked_up = "the address typed"  # never echoed back, never stored
        status = query.get("status") if query.get("status") in (*OUTCOMES, "sending") else None
        now = await views.now()
        if job is not None or recipient_key is not None:
            found = await views.receipts(job_id=job, recipient_key=recipient_key, limit=100)
            retrying = []
        else:
            found = await views.receipts(status=status, limit=50)
            retrying = await views.receipts(status="retrying", limit=50)
        counts = await views.receipt_counts(24)
        data: dict[str, Any] = {
            "measured_at": now,
            "counts": counts,
            "receipts": found,
            "retrying": retrying,
            "job": job,
            "status": status,
        }
        if self._api(request):
            return _json(data)
        return self._render(
            request,
            "receipts.html.j2",
            error=error,
            looked_up=looked_up,
            outcomes=OUTCOMES,
            **data,
        )

    # Dead letters -----------------------------------------------------------------------

    async def _dead_letters(self) -> DeadLetters:
        return DeadLetters(await self._c.broker())

    async def _dead(self, request: web.Request) -> web.Response:
        dead = await self._dead_letters()
        parked = await dead.show(DEAD_SHOWN)
        now = datetime.now(UTC)
        rows = [
            {
                "ref": body_ref(view.body),
                "job_id": view.job_id,
                "origin": view.origin,
                "reason": view.reason,
                "parked_at": view.parked_at,
                "delivery_count": view.headers.get("x-delivery-count"),
                "size": len(view.body),
            }
            for view in parked
        ]
        if self._api(request):
            return _json({"measured_at": now, "parked": rows, "shown_at_most": DEAD_SHOWN})
        return self._render(request, "dead.html.j2", parked=rows, measured_at=now, limit=DEAD_SHOWN)

    async def _dead_one(self, request: web.Request) -> web.Response:
        ref = request.match_info["ref"]
        dead = await self._dead_letters()
        for view in await dead.show(DEAD_SHOWN):
            if ref in (body_ref(view.body), view.job_id):
                return self._render(
                    request,
                    "dead_one.html.j2",
                    ref=body_ref(view.body),
                    view=view,
                    headers=masked_headers(view.headers),
                    body=pretty_body(view.body),
                )
        raise web.HTTPNotFound(text="no such parked job (among the first 200)")

    async def _dead_action(self, request: web.Request) -> web.StreamResponse:
        action = request.match_info["action"]
        if action not in DEAD_ACTIONS:
            raise web.HTTPNotFound(text="no such action")
        form = await self._form(request)
        api = self._api(request)
        every = form.get("all") in ("yes", True)
        raw = form.get("refs") or []
        refs = {str(r) for r in raw} if isinstance(raw, list) else set()
        if not every and not refs:
            raise web.HTTPBadRequest(text="choose parked jobs, or all")
        if not api and form.get("confirm") != "yes":
            require_operator(request)
            what = "every parked job" if every else f"{len(refs)} parked job(s)"
            verb = "Send back to its origin queue" if action == "requeue" else "Delete for good"
            return self._render(
                request,
                "confirm.html.j2",
                question=f"{verb}: {what}?",
                action_url=request.path,
                fields={"all": "yes"} if every else {},
                refs=sorted(refs),
                button=action,
                back="/dead",
            )
        target = "all" if every else ",".join(sorted(refs))[:500]
        session = request[SESSION_KEY]
        try:
            require_operator(request)
        except web.HTTPForbidden:
            await self._c.operators.audit(
                session.operator.name,
                f"dead {action}",
                target=target,
                result="refused",
                detail="viewer",
                source=source_of(request),
            )
            raise
        dead = await self._dead_letters()
        response = web.StreamResponse(
            headers={"Content-Type": "application/x-ndjson" if api else "text/html"}
        )
        if not api:
            response.headers.update(_stream_headers())
        await response.prepare(request)
        if not api:
            await response.write(
                self._env.get_template("stream_head.html.j2")
                .render(
                    operator=session.operator,
                    csrf=session.csrf_token,
                    path=request.path,
                    action=action,
                    refresh=0,
                )
                .encode()
            )
        done = left = 0
        try:
            async for view, settled in dead.settle(action, None if every else refs):
                done += settled
                left += not settled
                line = {
                    "ref": body_ref(view.body),
                    "job_id": view.job_id,
                    "origin": view.origin,
                    "done": settled,
                }
                if api:
                    await response.write((json.dumps(line) + "\n").encode())
                else:
                    await response.write(
                        self._env.get_template("stream_row.html.j2").render(**line).encode()
                    )
        except (TemporaryFailure, OSError, RuntimeError) as exc:
            result, detail = "failed", f"{done} {action}d, then: {exc}"
        else:
            result, detail = "done", f"{done} {action}d, {left} left (no known origin)"
        await self._c.operators.audit(
            session.operator.name,
            f"dead {action}",
            target=target,
            result=result,
            detail=detail,
            source=source_of(request),
        )
        summary = {"done": done, "left": left, "result": result, "detail": detail}
        if api:
            await response.write((json.dumps(summary) + "\n").encode())
        else:
            await response.write(
                self._env.get_template("stream_tail.html.j2").render(**summary).encode()
            )
        await response.write_eof()
        return response

    # Suppressions and lists ---------------------------------------------------------------

    def _key(self, typed: object) -> bytes | None:
        if not isinstance(typed, str) or not typed.strip():
            return None
        try:
            return address_key(self._c.hash_key, normalize_address(typed.strip()))
        except (InvalidAddress, ValueError):
            return None

    async def _suppressions(self, request: web.Request) -> web.Response:
        views = self._c.views
        lists = await views.lists()
        now = await views.now()
        lookup = None
        error = None
        typed = ""
        if request.method == "POST":
            form = await self._form(request)
            typed = str(form.get("address", ""))
            key = self._key(typed)
            if key is None:
                error = "not an e-mail address"
            else:
                lookup = {
                    "suppression": await views.suppression(key),
                    "subscriptions": await views.subscriptions_of(key),
                }
        return self._render(
            request,
            "suppressions.html.j2",
            lists=lists,
            measured_at=now,
            lookup=lookup,
            error=error,
            typed=typed,
        )

    async def _suppression_action(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        if action not in ("lift", "add"):
            raise web.HTTPNotFound(text="no such action")
        form = await self._form(request)
        typed = str(form.get("address", ""))
        key = self._key(typed)
        if key is None:
            raise web.HTTPBadRequest(text="not an e-mail address")
        reason = str(form.get("reason", "hard_bounce"))
        if action == "add" and reason not in ("hard_bounce", "complaint"):
            raise web.HTTPBadRequest(text="reason: hard_bounce or complaint")
        if form.get("confirm") != "yes":
            require_operator(request)
            return self._render(
                request,
                "confirm.html.j2",
                question=(
                    "Lift the suppression of the address typed?"
                    if action == "lift"
                    else f"Suppress the address typed ({reason})?"
                ),
                action_url=request.path,
                fields={"address": typed, "reason": reason},
                button=action,
                back="/suppressions",
            )
        session = request[SESSION_KEY]
        views = self._c.views

        async def run() -> str:
            if action == "lift":
                lifted = await views.lift_suppression(key)
                if lifted is None:
                    raise LookupError("no suppression to lift (an erasure is never lifted)")
                return f"lifted {lifted}"
            if not await views.add_suppression(
                key, reason, f"added in the console by {session.operator.name}"
            ):
                raise ValueError("the address is suppressed already")
            return f"added {reason}"

        # the audit names the address by its hash reference, never in clear
        done, outcome = await self._act(request, f"suppression {action}", "#" + key[:4].hex(), run)
        return self._render(
            request,
            "result.html.j2",
            http_status=200 if done else 409,
            ok=done,
            text=outcome,
            back="/suppressions",
        )

    # Audit --------------------------------------------------------------------------------

    async def _audit(self, request: web.Request) -> web.Response:
        entries = await self._c.operators.recent_audit(200)
        now = datetime.now(UTC)
        if self._api(request):
            return _json({"measured_at": now, "entries": entries})
        return self._render(request, "audit.html.j2", entries=entries, measured_at=now)


async def _none() -> None:
    return None


def _stream_headers() -> dict[str, str]:
    return {
        **SECURITY_HEADERS,
        "Content-Security-Policy": CONSOLE_POLICY,
        "Cache-Control": "no-store",
        "Server": "mailer",
    }
