"""The service's lifecycle over its parts: a start that fails halfway leaves nothing running,
and a stop drains the worker while the rest still answers."""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest

from mailer.adapters.broker import Broker
from mailer.adapters.queues import queue_depths
from mailer.adapters.topology import DEAD_QUEUE, ROUTES
from mailer.config import build_settings
from mailer.errors import ConfigError
from mailer.service import Service
from tests.conftest import StartService
from tests.support.http import base_url
from tests.support.jobs import encode, receipt
from tests.support.readiness import check
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

QUEUES = (*ROUTES.values(), DEAD_QUEUE)


async def test_a_part_that_fails_to_start_stops_the_parts_started_before_it(
    config: dict[str, Any], portal: Broker, db: asyncpg.Connection
) -> None:
    """Another program holds the public port: the start fails naming the setting to change,
    after the worker had started consuming. Whatever had started is stopped: 0 of the 4
    queues keep a consumer, and the process's row in `workers` says stopped."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config["http"]["port"] = port
        service = Service(build_settings(config))
        with pytest.raises(ConfigError, match=rf"\[http\] cannot listen on 127\.0\.0\.1:{port}"):
            await service.start()
    depths = await queue_depths(portal, QUEUES)
    consumers = {depth.name: depth.consumers for depth in depths}
    assert consumers == dict.fromkeys(QUEUES, 0), (
        f"consumers left after the failed start: {consumers}"
    )
    rows = await db.fetch("SELECT stopped_at FROM workers")
    assert len(rows) == 1, "the worker had registered before the web failed"
    assert rows[0]["stopped_at"] is not None
    await service.stop()  # again: nothing is left to stop


async def test_while_the_worker_drains_readyz_answers_not_ready_and_the_send_is_recorded(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    """The relay holds the DATA of a receipt when the service is stopped (as at SIGTERM).
    While the worker drains, the public listener still answers: /readyz 503, no consumer
    on any of the 4 queues. Once the relay answers, the receipt is recorded as sent before
    the stop ends: lost 0, sent twice 0."""
    smtp_server.hold_after = 0
    config["worker"]["drain_timeout"] = 30
    service = await start_service(config)
    url = base_url(service) + "/readyz"
    job = receipt()
    await portal.publish(encode(job), routing_key="receipt")

    async def in_hand() -> bool:
        return sum(smtp_server.in_flight.values()) == 1

    await eventually(in_hand)
    stopping = asyncio.create_task(service.stop())

    async def draining() -> dict[str, Any] | None:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            body: dict[str, Any] = await response.json()
            return body if response.status == 503 else None

    body = await eventually(draining)
    consumers = check(body, "consumers")
    assert consumers["detail"] == f"no consumer on {', '.join(QUEUES)}", body
    assert check(body, "database")["ok"] is True, body
    assert not stopping.done(), "the stop ended with a send in hand"
    smtp_server.release.set()
    await asyncio.wait_for(stopping, timeout=30)
    status = await db.fetchval(
        "SELECT status FROM deliveries WHERE job_id = $1", uuid.UUID(job["id"])
    )
    assert status == "sent"
    assert [m.rcpt_tos for m in smtp_server.received] == [(job["to"]["email"],)]
