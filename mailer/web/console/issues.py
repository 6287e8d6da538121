"""Newsletter issues: the list, one issue's progress, domains and failures; pause,
resume and cancel behind a confirmation."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime
from typing import Any
from uuid import UUID

from aiohttp import web

from mailer.adapters.issues import Progress
from mailer.adapters.ledger_views import DomainRow
from mailer.core.deliveries import READING_ORDER, DeliveryStatus
from mailer.core.issues import issue_action
from mailer.web.console.bounces import rate as rate_of
from mailer.web.console.cache import LIVE_SECONDS, SLOW_SECONDS
from mailer.web.console.kit import Pages, Route, get, json_response, post
from mailer.web.console.progress import rated


class IssuePages(Pages):
    def routes(self) -> list[Route]:
        return [
            get("/issues", self._issues, api=True),
            get("/issues/{id}", self._issue, api=True),
            post("/issues/{id}/{action}", self._issue_action, api=True),
        ]

    async def _issues(self, request: web.Request) -> web.Response:
        now, rates = await self._c.fresh.get("issues", LIVE_SECONDS, self._issue_list)
        if self._api(request):
            issues = [
                {**dataclasses.asdict(r.issue), "estimate": r.estimate, "rate": r.said}
                for r in rates
            ]
            return json_response({"measured_at": now, "issues": issues})
        return self._render(
            request, "issues.html.j2", rates=rates, measured_at=now, statuses=READING_ORDER
        )

    async def _issue_list(self) -> tuple[datetime, list[Progress]]:
        now = await self._c.views.now()
        return now, await rated(self._c, await self._c.issues.newest(limit=200))

    def _issue_id(self, request: web.Request) -> UUID:
        try:
            return UUID(request.match_info["id"])
        except ValueError:
            raise web.HTTPNotFound(text="no such issue") from None

    async def _issue_data(self, issue_id: UUID) -> dict[str, Any] | None:
        views = self._c.views
        issue = await self._c.issues.summary(issue_id)
        if issue is None:
            return None

        async def domains() -> tuple[datetime, list[DomainRow]]:
            return await views.now(), await views.domains(issue_id)

        (rate,), (domains_at, by_domain), failures, complained = await asyncio.gather(
            rated(self._c, [issue], newest_send=True),
            self._c.fresh.get(f"domains {issue_id}", SLOW_SECONDS, domains),
            views.failures(issue_id),
            self._c.bounces.complaint_rate(issue_id),
        )
        complaints, deliveries = complained or (0, issue.size)
        bounced = issue.counts.get(DeliveryStatus.BOUNCED, 0)
        return {
            "measured_at": min(rate.facts.measured_at, issue.measured_at),
            "issue": issue,
            "estimate": rate.estimate,
            "rate": rate.said,
            "stalled": rate.estimate.stalled,
            "last_sent_at": rate.facts.last_sent_at,
            "domains_measured_at": domains_at,
            "domains": by_domain,
            "failures": failures,
            "bounces": {
                "deliveries": deliveries,
                "bounced": bounced,
                "bounce_rate": rate_of(bounced, deliveries),
                "complaints": complaints,
                "complaint_rate": rate_of(complaints, deliveries),
            },
        }

    async def _issue_read(self, issue_id: UUID) -> dict[str, Any] | None:
        """Shared by the issue's page and its actions' confirmations."""
        return await self._c.fresh.get(
            f"issue {issue_id}", LIVE_SECONDS, lambda: self._issue_data(issue_id)
        )

    async def _issue(self, request: web.Request) -> web.Response:
        issue_id = self._issue_id(request)
        data = await self._issue_read(issue_id)
        if data is None:
            raise web.HTTPNotFound(text="no such issue")
        return self._answer(request, "issue.html.j2", data, statuses=READING_ORDER)

    async def _issue_action(self, request: web.Request) -> web.Response:
        issue_id = self._issue_id(request)
        action = issue_action(request.match_info["action"])
        if action is None:
            raise web.HTTPNotFound(text="no such action")
        form = await self._form(request)
        api = self._api(request)
        if not api and form.get("confirm") != "yes":
            await self._operator(request, f"issue {action}", str(issue_id))
            data = await self._issue_read(issue_id)
            if data is None:
                raise web.HTTPNotFound(text="no such issue")
            issue = data["issue"]
            return self._render(
                request,
                "confirm.html.j2",
                question=f"{action.capitalize()} issue “{issue.subject}” ({issue.state})?",
                action_url=request.path,
                fields={},
                button=action,
                back=f"/issues/{issue_id}",
            )

        async def run() -> str:
            before, after = await self._c.issues.set_state(issue_id, action)
            if before is None:
                raise LookupError(f"no issue {issue_id}")
            if after is None:
                raise ValueError(f"issue is {before}: cannot {action} it")
            return f"{before} → {after}"

        done, outcome = await self._act(request, f"issue {action}", str(issue_id), run)
        if api:
            return json_response({"done": done, "result": outcome}, status=200 if done else 409)
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
