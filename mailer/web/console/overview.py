"""The overview: outcomes per minute as a chart, active issues, queues, services."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aiohttp import web

from mailer.adapters.queues import QueueState, queue_states
from mailer.adapters.workers import WorkerProcess
from mailer.core.issues import NOT_FINISHED
from mailer.errors import MailerError
from mailer.web.console.cache import LIVE_SECONDS, SLOW_SECONDS
from mailer.web.console.charts import sends_chart
from mailer.web.console.kit import Pages, Route, get, json_response
from mailer.web.console.minutes import MinuteCounts
from mailer.web.console.progress import rated


class OverviewPages(Pages):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._minutes = MinuteCounts(self._c.views)

    def routes(self) -> list[Route]:
        return [get("/", self._overview, api="/api/overview")]

    async def _queues(self) -> tuple[list[QueueState], str | None]:
        try:
            broker = await self._c.broker()
            return await queue_states(broker, self._c.workers, self._c.queue_names), None
        except (MailerError, OSError, TimeoutError, RuntimeError) as exc:
            return [], f"broker unreachable: {exc}"

    async def _parked(self) -> dict[str, Any]:
        """Jobs parked for an operator (the dead letters), by origin, from the database."""
        parked = self._c.parked
        counts = await parked.counts()
        return {
            "total": sum(counts.values()),
            "by_origin": {origin or "unknown": n for origin, n in sorted(counts.items(), key=str)},
            "oldest": await parked.oldest_parked_at() if counts else None,
        }

    async def _workers(self) -> tuple[list[WorkerProcess], str | None]:
        try:
            return await self._c.workers.list(), None
        except MailerError as exc:
            return [], f"worker processes unknown: {exc}"

    async def _overview_data(self) -> dict[str, Any]:
        views = self._c.views
        now = await views.now()
        (
            (chart_at, counts),
            active,
            (queues, broker_error),
            (processes, workers_error),
            worker,
            parked,
        ) = await asyncio.gather(
            self._c.fresh.get("chart", SLOW_SECONDS, self._minutes.read),
            self._c.issues.newest(limit=20, states=NOT_FINISHED),
            self._queues(),
            self._workers(),
            self._c.readiness() if self._c.readiness is not None else _none(),
            self._parked(),
        )
        rates = await rated(self._c, active)
        return {
            "measured_at": now,
            "chart_measured_at": chart_at,
            "minutes": counts,
            "active_issues": [
                {"issue": r.issue, "estimate": r.estimate, "rate": r.said} for r in rates
            ],
            "queues": queues,
            "broker_error": broker_error,
            "parked": parked,
            "workers": processes,
            "workers_error": workers_error,
            "workers_measured_at": processes[0].measured_at if processes else now,
            "worker": _with_moments(worker) if worker is not None else None,
            "relay": relay_summary(processes),
            "database": {"ok": True, "detail": "reachable", "measured_at": now},
        }

    async def _overview(self, request: web.Request) -> web.Response:
        data = await self._c.fresh.get("overview", LIVE_SECONDS, self._overview_data)
        if self._api(request):
            return json_response(data)
        chart, legend = sends_chart(data["minutes"], now=data["chart_measured_at"])
        return self._render(request, "overview.html.j2", chart=chart, legend=legend, **data)


def relay_summary(processes: Sequence[WorkerProcess]) -> dict[str, Any] | None:
    """The relay as every live worker process reported it: None when none runs a worker."""
    reports = [(w, w.relay) for w in processes if w.presence == "alive" and w.relay is not None]
    if not reports:
        return None
    failing = [(w, relay) for w, relay in reports if not relay.get("ok", True)]
    successes = [str(r["last_success"]) for _, r in reports if r.get("last_success")]
    failures = [r for _, r in reports if r.get("last_failure")]
    latest = max(failures, key=lambda r: str(r["last_failure"]), default=None)
    recent: dict[str, int] = {}
    for _, relay in reports:
        for kind, n in dict(relay.get("recent") or {}).items():
            recent[str(kind)] = recent.get(str(kind), 0) + int(n)
    return {
        "ok": not failing,
        "processes": len(reports),
        "failing": [
            {"host": w.host, "pid": w.pid, "detail": str(relay.get("detail", ""))}
            for w, relay in failing
        ],
        "last_success": _instant(max(successes, default=None)),
        "last_failure": _instant(latest["last_failure"]) if latest else None,
        "last_reason": latest.get("last_reason") if latest else None,
        "recent": recent,
        "as_of": min(w.relay_at or w.heartbeat_at for w, _ in reports),
    }


def _instant(value: object) -> datetime | None:
    """A time a worker process reported (ISO 8601, in its JSON), to be shown as every time is."""
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.utcoffset() is not None else None


def _with_moments(checks: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """This process's own checks, their times as times."""
    moments = ("last_success", "last_failure")
    return {
        name: {key: _instant(value) if key in moments else value for key, value in check.items()}
        for name, check in checks.items()
    }


async def _none() -> None:
    return None
