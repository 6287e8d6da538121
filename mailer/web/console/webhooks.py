"""Webhooks: each endpoint's state, last success and failure (with the reason), backlog
(the account's events after its cursor) and next attempt; operators disable, enable, and
replay from a moment (the cursor goes back to before the first event at or after it, so
everything kept since then is delivered again, under new batch ids). Viewers only read.
Registering and rotating secrets are commands (`mailer webhooks`): a secret is shown once,
on the terminal of who made it."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from aiohttp import web

from mailer.adapters.webhooks import EndpointView
from mailer.core.times import typed_moment, when
from mailer.web.console.auth import SESSION_KEY
from mailer.web.console.kit import Pages, Route, get, json_response, post

WEBHOOK_ACTIONS = ("disable", "enable", "replay")
MAX_REASON = 200


def replay_moment(text: str) -> datetime:
    """A moment typed in the form (`datetime-local`, read as UTC) or in JSON (ISO 8601)."""
    try:
        return typed_moment(text, datetime.now(UTC))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"since: {exc}") from None


class WebhookPages(Pages):
    def routes(self) -> list[Route]:
        return [
            get("/webhooks", self._webhooks, api=True),
            post("/webhooks/{endpoint}/{action}", self._action, api=True),
        ]

    async def _webhooks(self, request: web.Request) -> web.Response:
        endpoints = await self._c.webhooks.views()
        now = endpoints[0].measured_at if endpoints else datetime.now(UTC)
        if self._api(request):
            return json_response(
                {
                    "measured_at": now,
                    "endpoints": [
                        {**_fields(one), "shown_state": one.shown_state} for one in endpoints
                    ],
                }
            )
        return self._render(
            request,
            "webhooks.html.j2",
            endpoints=[(one, one.shown_state) for one in endpoints],
            measured_at=now,
        )

    async def _action(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        if action not in WEBHOOK_ACTIONS:
            raise web.HTTPNotFound(text="no such action")
        try:
            endpoint = UUID(request.match_info["endpoint"])
        except ValueError:
            raise web.HTTPNotFound(text="no such endpoint") from None
        form = await self._form(request)
        api = self._api(request)
        since_text = str(form.get("since", ""))
        since = replay_moment(since_text) if action == "replay" else None
        reason = str(form.get("reason", "") or "disabled in the console")[:MAX_REASON]
        await self._operator(request, f"webhook {action}", str(endpoint))
        if not api and form.get("confirm") != "yes":
            question = {
                "disable": "Disable this endpoint? Nothing is sent to it until it is enabled.",
                "enable": "Enable this endpoint? It is tried at once.",
                "replay": f"Deliver again every kept event since {when(since)} to this endpoint?",
            }[action]
            return self._render(
                request,
                "confirm.html.j2",
                question=question,
                action_url=request.path,
                fields={"since": since_text, "reason": reason},
                button=action,
                back="/webhooks",
            )
        name = request[SESSION_KEY].operator.name

        async def run() -> str:
            if action == "disable":
                await self._c.webhooks.disable(endpoint, f"{reason} ({name})")
                return "disabled"
            if action == "enable":
                await self._c.webhooks.enable(endpoint)
                return "enabled"
            assert since is not None
            position = await self._c.webhooks.replay(endpoint, since)
            return f"replays from position {position + 1} (events since {when(since)})"

        done, outcome = await self._act(request, f"webhook {action}", str(endpoint), run)
        return self._result(request, done, outcome, back="/webhooks")


def _fields(one: EndpointView) -> dict[str, object]:
    return {name: getattr(one, name) for name in EndpointView.__dataclass_fields__}
