"""Suppressions and lists: subscribers per list by status, an address's suppression
and lists, lifting or adding a suppression (audited by the address's hash reference)."""

from __future__ import annotations

from aiohttp import web

from mailer.adapters.suppression_list import MANUAL_REASONS
from mailer.core.addresses import InvalidAddress, address_key, address_ref, normalize_address
from mailer.web.console.auth import SESSION_KEY, require_operator
from mailer.web.console.kit import Pages


class SuppressionPages(Pages):
    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/suppressions", self._suppressions)
        r.add_post("/suppressions", self._suppressions)
        r.add_post("/suppressions/{action}", self._suppression_action)

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
        if action == "add" and reason not in MANUAL_REASONS:
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

        async def run() -> str:
            if action == "lift":
                lifted = await self._c.suppressions.lift(key)
                if lifted is None:
                    raise LookupError("no suppression to lift (an erasure is never lifted)")
                return f"lifted {lifted}"
            if not await self._c.suppressions.add(
                key, reason, f"added in the console by {session.operator.name}"
            ):
                raise ValueError("the address is suppressed already")
            return f"added {reason}"

        # the audit names the address by its hash reference, never in clear
        done, outcome = await self._act(request, f"suppression {action}", address_ref(key), run)
        return self._render(
            request,
            "result.html.j2",
            http_status=200 if done else 409,
            ok=done,
            text=outcome,
            back="/suppressions",
        )
