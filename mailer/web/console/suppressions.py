"""Suppressions and lists: subscribers per list by status, the suppressions in force (with
the bounce report that made each and when it expires), an address's suppression and lists,
lifting or adding a suppression (audited by the address's hash reference). The suppression
list is read and changed through its one owner, mailer/adapters/suppressions.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from mailer.adapters.suppressions import OPERATOR_REASONS, Suppression
from mailer.core.addresses import InvalidAddress, address_ref, typed_address_key
from mailer.core.consent import SUPPRESSION_REASONS
from mailer.core.times import when
from mailer.web.console.auth import SESSION_KEY
from mailer.web.console.kit import Pages, Route, get, post

MAX_DAYS = 3650


class SuppressionPages(Pages):
    def routes(self) -> list[Route]:
        return [
            get("/suppressions", self._suppressions, api=True),
            post("/suppressions", self._suppressions),  # a typed address travels in the body
            post("/suppressions/{action}", self._suppression_action),
        ]

    def _key(self, typed: object) -> bytes | None:
        if not isinstance(typed, str) or not typed.strip():
            return None
        try:
            return typed_address_key(self._c.hash_key, typed)
        except (InvalidAddress, ValueError):
            return None

    async def _suppressions(self, request: web.Request) -> web.Response:
        views = self._c.views
        reason = request.query.get("reason")
        if reason not in SUPPRESSION_REASONS:
            reason = None
        lists = await views.lists()
        now = await views.now()
        in_force = await self._c.suppressions.active(reason=reason, limit=100)
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
                    "ref": address_ref(key),
                    "suppression": await self._c.suppressions.show(key),
                    "subscriptions": await views.subscriptions_of(key),
                }
        data: dict[str, Any] = {
            "measured_at": now,
            "reason": reason,
            "suppressions": [
                {**_shown(one), "ref": address_ref(one.address_key)} for one in in_force
            ],
        }
        return self._answer(
            request,
            "suppressions.html.j2",
            data,
            lists=lists,
            lookup=lookup,
            error=error,
            typed=typed,
            reasons=SUPPRESSION_REASONS,
            operator_reasons=OPERATOR_REASONS,
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
        reason = str(form.get("reason", "manual"))
        days_typed = str(form.get("days", "")).strip()
        days: int | None = None
        if action == "add":
            if reason not in OPERATOR_REASONS:
                raise web.HTTPBadRequest(text=f"reason: one of {', '.join(OPERATOR_REASONS)}")
            if days_typed:
                if not days_typed.isdigit() or not 1 <= int(days_typed) <= MAX_DAYS:
                    raise web.HTTPBadRequest(text=f"days: a whole number from 1 to {MAX_DAYS}")
                days = int(days_typed)
            if reason == "soft_bounce" and days is None:
                raise web.HTTPBadRequest(text="a soft bounce's suppression expires: give days")
        if form.get("confirm") != "yes":
            await self._operator(request, f"suppression {action}", address_ref(key))
            until = f", for {days} days" if days is not None else ", for good"
            return self._render(
                request,
                "confirm.html.j2",
                question=(
                    "Lift the suppression of the address typed?"
                    if action == "lift"
                    else f"Suppress the address typed ({reason}{until})?"
                ),
                action_url=request.path,
                fields={"address": typed, "reason": reason, "days": days_typed},
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
            expires_at = None
            if days is not None:
                expires_at = await self._c.views.now() + timedelta(days=days)
            if not await self._c.suppressions.add(
                key,
                f"added in the console by {session.operator.name}",
                reason=reason,
                expires_at=expires_at,
            ):
                raise ValueError("the address is suppressed already")
            return f"added {reason}" + (f" until {when(expires_at)}" if expires_at else "")

        # the audit names the address by its hash reference, never in clear
        done, outcome = await self._act(request, f"suppression {action}", address_ref(key), run)
        return self._result(request, done, outcome, back="/suppressions")


def _shown(one: Suppression) -> dict[str, Any]:
    """A suppression without its key (the page shows the key's reference instead)."""
    return {
        "reason": one.reason,
        "detail": one.detail,
        "created_at": one.created_at,
        "expires_at": one.expires_at,
        "report_id": one.report_id,
    }
