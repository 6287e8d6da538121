"""The audit log: who did what, when, and how it went."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from mailer.web.console.kit import Pages, json_response


class AuditPages(Pages):
    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/audit", self._audit)
        r.add_get("/api/audit", self._audit)

    async def _audit(self, request: web.Request) -> web.Response:
        entries = await self._c.operators.recent_audit(200)
        now = datetime.now(UTC)
        if self._api(request):
            return json_response({"measured_at": now, "entries": entries})
        return self._render(request, "audit.html.j2", entries=entries, measured_at=now)
