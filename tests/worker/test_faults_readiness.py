"""GET /readyz tells the truth: broker, database, live consumers, the relay's recent state
and the lease heartbeat, each in the JSON; 503 as soon as any one of them is not ok.

The contract: {"status": "ready"|"not ready", "checks": {"database": {ok, detail},
"broker": {ok, detail}, "consumers": {ok, detail, queues: {queue: bool}}, "relay": {ok,
detail, last_success, last_failure}, "heartbeat": {ok, detail}}}. The relay is not ok after
3 consecutive failed sessions with no success since, and ok again after a success.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from mailer.adapters.broker import Broker
from mailer.service import Service
from tests.conftest import StartService
from tests.support.deadlines import reached
from tests.support.jobs import encode, receipt
from tests.support.outage import database_away
from tests.support.readiness import CHECKS, check, failing, readiness
from tests.support.smtp import SmtpServer

# The work queues and mailer.dead, whose consumer moves parked jobs into the database.
QUEUES = ("mailer.receipts", "mailer.newsletters", "mailer.subscriptions", "mailer.dead")
REFUSED = "553 5.1.8 Sender address rejected"


async def not_ready_on(service: Service, name: str, timeout: float = 8) -> bool:
    async def probe() -> bool:
        status, body = await readiness(service)
        return status == 503 and body.get("status") == "not ready" and name in failing(body)

    return await reached(probe, timeout=timeout)


async def ready(service: Service, timeout: float = 8) -> bool:
    async def probe() -> bool:
        status, body = await readiness(service)
        return status == 200 and body.get("status") == "ready" and not failing(body)

    return await reached(probe, timeout=timeout)


async def test_a_healthy_service_is_ready_and_says_so_check_by_check(
    config: dict[str, Any], start_service: StartService
) -> None:
    """200, and a check of its own, ok and explained, for each of database, broker,
    consumers (per queue), relay, heartbeat and events (the outbox relay: never unready)."""
    service = await start_service(config)
    status, body = await readiness(service)
    assert status == 200, body
    assert body["status"] == "ready", body
    assert set(body["checks"]) == set(CHECKS), body
    for name in CHECKS:
        assert check(body, name).get("ok") is True, (name, body)
        assert isinstance(check(body, name).get("detail"), str), (name, body)
    assert check(body, "consumers").get("queues") == dict.fromkeys(QUEUES, True), body
    relay = check(body, "relay")
    assert "last_success" in relay and "last_failure" in relay, body


async def test_a_work_queue_without_a_consumer_makes_it_not_ready(
    config: dict[str, Any], start_service: StartService, portal: Broker
) -> None:
    """An operator deletes mailer.receipts: the broker cancels our consumer and receipts
    stop. /readyz answers 503 within seconds, naming the queue."""
    service = await start_service(config)
    channel = await portal.open_channel()
    await channel.queue_delete("mailer.receipts")
    flagged = await not_ready_on(service, "consumers")
    status, body = await readiness(service)
    assert flagged, f"/readyz is {status} with no consumer on mailer.receipts: {body}"
    assert check(body, "consumers")["queues"]["mailer.receipts"] is False, body
    assert check(body, "consumers")["queues"]["mailer.newsletters"] is True, body


async def test_a_relay_without_starttls_makes_it_not_ready(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    """The relay offers no STARTTLS and the URL requires it: every session is refused.
    /readyz answers 503 after 3 failed sessions, relay.last_failure set, last_success null;
    the 3 receipts wait, none failed."""
    config["smtp"]["url"] = f"smtp://127.0.0.1:{smtp_server.port}"  # STARTTLS required
    service = await start_service(config)
    for n in range(3):
        await portal.publish(
            encode(receipt(to={"email": f"k{n}@example.pl"})), routing_key="receipt"
        )
    flagged = await not_ready_on(service, "relay")
    status, body = await readiness(service)
    assert flagged, f"/readyz is {status} while the relay refuses every session: {body}"
    relay = check(body, "relay")
    assert relay["last_failure"] is not None and relay["last_success"] is None, body
    assert smtp_server.received == []
    assert await db.fetchval("SELECT count(*) FROM deliveries WHERE status = 'failed'") == 0


async def test_readiness_comes_back_after_the_relay_takes_our_sender_again(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
) -> None:
    """MAIL FROM refused counts as a failed session: 503 after 3 refusals, 200 again after
    the first success."""
    smtp_server.mail_reply = REFUSED
    service = await start_service(config)
    for n in range(3):
        await portal.publish(
            encode(receipt(to={"email": f"k{n}@example.pl"})), routing_key="receipt"
        )
    flagged = await not_ready_on(service, "relay")
    smtp_server.mail_reply = None
    await portal.publish(encode(receipt(to={"email": "k9@example.pl"})), routing_key="receipt")
    back = await ready(service, timeout=10)
    status, body = await readiness(service)
    assert flagged, "/readyz stayed 200 while the relay refused our sender"
    assert back, f"not ready again after a success: {status} {body}"
    assert check(body, "relay")["last_success"] is not None, body


async def test_a_database_outage_makes_it_not_ready_and_says_which(
    config: dict[str, Any], start_service: StartService, database_url: str
) -> None:
    """503 while the database is away, its check saying why (the broker's still ok), and
    ready again once it is back."""
    service = await start_service(config)
    async with database_away(database_url):
        flagged = await not_ready_on(service, "database")
        status, body = await readiness(service)
    assert flagged, (status, body)
    assert check(body, "database").get("ok") is False, body
    assert check(body, "database").get("detail"), body
    assert check(body, "broker").get("ok") is True, body
    assert await ready(service, timeout=10), "not ready again after the database came back"
