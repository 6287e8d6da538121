"""Bounces and complaints that came back: the recent reports by kind with the reason each
was classified for and what it changed, one report with its raw text (addresses masked),
and the latest issues' bounce and complaint rates."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from mailer.web.console.kit import Pages, Route, get, json_response
from mailer.web.console.masking import MAX_SHOWN, mask_text

KINDS = ("hard", "soft", "policy", "complaint", "ignored", "unparseable")  # as the schema allows
DAYS = 7


def rate(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "—"


class BouncePages(Pages):
    def routes(self) -> list[Route]:
        return [
            get("/bounces", self._bounces, api=True),
            get("/bounces/{id}", self._report, api=True),
        ]

    async def _bounces(self, request: web.Request) -> web.Response:
        kind = request.query.get("kind")
        if kind not in KINDS:
            kind = None
        reports = self._c.bounces
        now = await self._c.views.now()
        by_kind: dict[str, int] = {}
        by_domain = await reports.counts(days=DAYS)
        for name, _, n in by_domain:
            by_kind[name] = by_kind.get(name, 0) + n
        data: dict[str, Any] = {
            "measured_at": now,
            "kind": kind,
            "days": DAYS,
            "by_kind": by_kind,
            "by_domain": [{"kind": k, "domain": d, "reports": n} for k, d, n in by_domain],
            "reports": await reports.latest(kind=kind, limit=100),
            "issues": [
                {
                    "issue": issue_id,
                    "deliveries": total,
                    "bounced": bounced,
                    "complaints": complaints,
                    "bounce_rate": rate(bounced, total),
                    "complaint_rate": rate(complaints, total),
                }
                for issue_id, total, bounced, complaints in await reports.issue_rates(limit=20)
            ],
        }
        return self._answer(request, "bounces.html.j2", data, kinds=KINDS)

    async def _report(self, request: web.Request) -> web.Response:
        try:
            report_id = int(request.match_info["id"])
        except ValueError:
            raise web.HTTPNotFound(text="no such report") from None
        if not 0 < report_id < 2**63:
            raise web.HTTPNotFound(text="no such report")
        found = await self._c.bounces.show(report_id)
        if found is None:
            raise web.HTTPNotFound(text="no such report")
        raw = None
        if found.raw is not None:  # emptied past the retention
            raw = mask_text(found.raw[:MAX_SHOWN].decode("utf-8", "replace"))
        now = await self._c.views.now()
        if self._api(request):
            shown = {k: v for k, v in dataclasses.asdict(found).items() if k != "raw"}
            return json_response({"measured_at": now, "report": shown, "raw": raw})
        return self._render(request, "bounce.html.j2", measured_at=now, report=found, raw=raw)
