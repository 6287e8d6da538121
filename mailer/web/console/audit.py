"""The audit log: who did what, when, and how it went."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from mailer.web.console.kit import Pages, Route, get


class AuditPages(Pages):
    def routes(self) -> list[Route]:
        return [get("/audit", self._audit, api=True)]

    async def _audit(self, request: web.Request) -> web.Response:
        entries = await self._c.operators.recent_audit(200)
        now = datetime.now(UTC)
        return self._answer(request, "audit.html.j2", {"measured_at": now, "entries": entries})
