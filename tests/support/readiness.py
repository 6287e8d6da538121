"""GET /readyz as a load balancer or an operator sees it."""

from __future__ import annotations

from typing import Any

import aiohttp

from mailer.service import Service
from tests.support.http import base_url

CHECKS = ("database", "broker", "consumers", "relay", "heartbeat", "events")


async def readiness(service: Service) -> tuple[int, dict[str, Any]]:
    """The status code and the JSON body of /readyz."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(base_url(service) + "/readyz") as response,
    ):
        body: dict[str, Any] = await response.json(content_type=None)
        return response.status, body


def check(body: dict[str, Any], name: str) -> dict[str, Any]:
    """One named check of the body; an empty dict when the body has no such check."""
    found = body.get("checks", {}).get(name)
    return found if isinstance(found, dict) else {}


def failing(body: dict[str, Any]) -> list[str]:
    """The checks the body says are not ok (a missing check counts as not ok)."""
    return [name for name in CHECKS if check(body, name).get("ok") is not True]
