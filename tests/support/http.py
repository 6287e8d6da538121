"""Read what the HTTP service shows, through real requests."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from mailer.service import Service


def base_url(service: Service) -> str:
    assert service.web is not None and service.web.port is not None
    return f"http://127.0.0.1:{service.web.port}"


def admin_url(service: Service) -> str:
    """The [admin] listener: the console, its API and /metrics."""
    assert service.admin is not None and service.admin.port is not None
    return f"http://127.0.0.1:{service.admin.port}"


async def metric(service: Service, name: str, **labels: str) -> float:
    """The value of one sample on /metrics (0 when absent)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(admin_url(service) + "/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0
