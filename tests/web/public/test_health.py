"""Health, readiness and metrics over real HTTP."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.conftest import StartService
from tests.support.http import admin_url, base_url
from tests.support.outage import database_away
from tests.support.waiting import eventually


async def get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json(content_type=None)


async def test_alive_and_ready(config: dict[str, Any], start_service: StartService) -> None:
    service = await start_service(config)
    assert await get(base_url(service) + "/healthz") == (200, {"status": "ok"})
    status, body = await get(base_url(service) + "/readyz")
    assert (status, body["status"]) == (200, "ready")
    checks = body["checks"]
    assert {name: check["ok"] for name, check in checks.items()} == {
        "database": True,
        "broker": True,
        "consumers": True,
        "relay": True,
        "heartbeat": True,
        "events": True,
    }
    assert checks["consumers"]["queues"] == {
        "mailer.receipts": True,
        "mailer.newsletters": True,
        "mailer.subscriptions": True,
        "mailer.dead": True,  # what reaches it is moved into the parked_jobs table
    }
    assert checks["relay"]["detail"] == "no session tried yet"


async def test_not_ready_while_the_database_is_away(
    config: dict[str, Any], start_service: StartService, database_url: str
) -> None:
    service = await start_service(config)
    async with database_away(database_url):
        status, body = await get(base_url(service) + "/readyz")
        assert status == 503
        assert body["checks"]["database"] == {"ok": False, "detail": "unreachable"}
        assert (await get(base_url(service) + "/healthz"))[0] == 200  # alive all the same

    async def ready() -> bool:
        return (await get(base_url(service) + "/readyz"))[0] == 200

    # Ready again once the database answers: the heartbeat's renewal that failed meanwhile
    # is retried within half a second.
    await eventually(ready, timeout=10)


async def test_the_web_service_alone_needs_only_the_database(
    config: dict[str, Any], start_service: StartService
) -> None:
    service = await start_service(config, run_worker=False)
    assert await get(base_url(service) + "/readyz") == (
        200,
        {"status": "ready", "checks": {"database": {"ok": True, "detail": "reachable"}}},
    )
    async with (
        aiohttp.ClientSession() as session,
        session.get(base_url(service) + "/metrics") as response,
    ):
        assert response.status == 404  # the public listener has no /metrics
    async with (
        aiohttp.ClientSession() as session,
        session.get(admin_url(service) + "/metrics") as response,
    ):
        assert response.status == 200
        assert response.content_type == "text/plain"
        assert "# HELP mailer_deliveries_total" in await response.text()
