"""Read what the HTTP service shows, through real requests."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from mailer.parts.console import OperatorsConsole
from mailer.parts.web import PublicWeb
from mailer.service import Service


def base_url(service: Service) -> str:
    port = service.part(PublicWeb).port
    assert port is not None
    return f"http://127.0.0.1:{port}"


def admin_url(service: Service) -> str:
    """The [admin] listener: the console, its API and /metrics."""
    port = service.part(OperatorsConsole).port
    assert port is not None
    return f"http://127.0.0.1:{port}"


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
