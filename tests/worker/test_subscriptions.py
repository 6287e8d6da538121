"""Subscription changes from the portal: in order, double opt-in, erasure."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest

from mailer.adapters.broker import Broker
from mailer.core.addresses import address_key, address_ref
from tests.conftest import StartService
from tests.support.dead_letters import parked, reasons
from tests.support.http import base_url, metric
from tests.support.jobs import encode, receipt
from tests.support.newsletters import HASH_KEY, issue, subscribe, until_state
from tests.support.outage import database_away
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

ANNA = "anna.nowak@example.pl"
# The confirmation mail's job id follows from the subscription job's (worker/subscriptions.py).
CONFIRMATION_IDS = uuid.UUID("6f0d4c1e-4a51-4f4e-9f7a-2b8c0f6d9e31")


def change(action: str, **fields: Any) -> dict[str, Any]:
    job = {
        "kind": "subscription",
        "version": 1,
        "id": str(uuid.uuid4()),
        "action": action,
        "list": "lucid-news",
        "email": ANNA,
        "name": "Anna Nowak",
        "locale": "pl",
    }
    job.update(fields)
    return job


async def publish(portal: Broker, *jobs: dict[str, Any]) -> None:
    for job in jobs:
        await portal.publish(encode(job), routing_key="subscription")


async def status(db: asyncpg.Connection, email: str = ANNA) -> str | None:
    value: str | None = await db.fetchval(
        "SELECT sub.status FROM subscriptions sub JOIN subscribers s ON s.id = sub.subscriber_id"
        " WHERE s.email = $1",
        email,
    )
    return value


async def applied(db: asyncpg.Connection, *jobs: dict[str, Any]) -> None:
    async def all_done() -> bool:
        count = await db.fetchval(
            "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[])", [job["id"] for job in jobs]
        )
        return bool(count == len(jobs))

    await eventually(all_done)


async def test_changes_for_one_address_apply_in_the_order_published(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    db: asyncpg.Connection,
) -> None:
    service = await start_service(config)
    first = [
        change("subscribe", confirmed=True),
        change("unsubscribe"),
        change("subscribe", confirmed=True),
    ]
    await publish(portal, *first)
    await applied(db, *first)
    assert await status(db) == "subscribed"
    second = [change("unsubscribe"), change("subscribe", confirmed=True), change("unsubscribe")]
    await publish(portal, *second)
    await applied(db, *second)
    assert await status(db) == "unsubscribed"
    assert await metric(service, "mailer_unsubscribes_total", source="portal") == 3


async def test_the_order_holds_through_a_database_outage(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    database_url: str,
    db: asyncpg.Connection,
) -> None:
    await start_service(config)
    jobs = [change("subscribe", confirmed=True), change("unsubscribe")]
    async with database_away(database_url):
        await publish(portal, *jobs)
        await asyncio.sleep(1.5)  # the first change waits for the database, holding its place
    checker = await asyncpg.connect(database_url)  # the test's own connection was cut too
    try:
        await applied(checker, *jobs)
        assert await status(checker) == "unsubscribed"
    finally:
        await checker.close()


async def test_a_duplicate_change_is_not_applied_again(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    db: asyncpg.Connection,
) -> None:
    await start_service(config)
    subscribe_once = change("subscribe", confirmed=True)
    leave = change("unsubscribe")
    await publish(portal, subscribe_once, leave, subscribe_once)  # the portal retried the first
    await applied(db, subscribe_once, leave)
    marker = change("subscribe", email="someone.else@example.pl", confirmed=True)
    await publish(portal, marker)
    await applied(db, marker)  # everything before it has been handled too
    assert await status(db) == "unsubscribed"


async def test_double_opt_in(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    db: asyncpg.Connection,
    smtp_server: SmtpServer,
) -> None:
    service = await start_service(config)
    job = change("subscribe", confirmed=False)
    await publish(portal, job)

    async def mailed() -> bool:
        return any(m.rcpt_tos == (ANNA,) for m in smtp_server.received)

    await eventually(mailed)
    assert await status(db) == "pending"
    (message,) = smtp_server.received
    parsed = message.parsed()
    assert parsed["Subject"] == "Potwierdź zapis na listę Lucid News"
    assert parsed["From"] == "LucidOffice <no-reply@lucid.example>"
    text = parsed.get_body(("plain",))
    assert text is not None
    link = re.search(r"https://mail\.lucid\.example/c/[A-Za-z0-9_-]+", text.get_content())
    assert link is not None
    url = link[0].replace("https://mail.lucid.example", base_url(service))
    async with aiohttp.ClientSession() as session:
        for method in ("GET", "HEAD", "GET"):  # a mail scanner following the link
            async with session.request(method, url) as page:
                assert page.status == 200
        assert await status(db) == "pending"
        async with session.get(url) as page:
            assert "Potwierdzam zapis" in await page.text()
        assert await metric(service, "mailer_confirmations_total") == 0
        async with session.post(url, allow_redirects=False) as page:
            assert page.status == 200
            assert "Zapis potwierdzony" in await page.text()
    assert await status(db) == "subscribed"
    assert await metric(service, "mailer_confirmations_total") == 1
    await publish(portal, change("subscribe", confirmed=False))  # already in: no second mail
    marker = change("subscribe", email="someone.else@example.pl", confirmed=True)
    await publish(portal, marker)
    await applied(db, marker)
    assert [m.rcpt_tos for m in smtp_server.received] == [(ANNA,)]


async def test_the_confirmation_mail_is_logged_and_recorded_as_a_confirmation(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    db: asyncpg.Connection,
    smtp_server: SmtpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The double opt-in mail goes out as transactional mail, and is called a confirmation
    wherever it is named: the log line, the ledger's job, the metric."""
    caplog.set_level(logging.INFO, logger="mailer.worker.receipts")
    service = await start_service(config)
    job = change("subscribe", confirmed=False)
    await publish(portal, job)
    mail_id = uuid.uuid5(CONFIRMATION_IDS, job["id"])

    async def recorded() -> bool:
        found = await db.fetchval("SELECT status FROM deliveries WHERE job_id = $1", mail_id)
        return bool(found == "sent")

    await eventually(recorded)
    ref = address_ref(address_key(HASH_KEY, ANNA))
    said = [r.getMessage() for r in caplog.records if r.name == "mailer.worker.receipts"]
    assert len(said) == 1, said
    assert said[0].startswith(f"confirmation sent job={mail_id} rcpt={ref} reply='250 "), said
    assert await db.fetchval("SELECT kind FROM jobs WHERE id = $1", mail_id) == "confirmation"
    sent = {"kind": "confirmation", "outcome": "sent"}
    assert await metric(service, "mailer_deliveries_total", **sent) == 1
    assert await metric(service, "mailer_deliveries_total", kind="receipt", outcome="sent") == 0


async def test_erase_forgets_the_person_and_keeps_them_from_newsletters(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    db: asyncpg.Connection,
    smtp_server: SmtpServer,
    database_url: str,
) -> None:
    await subscribe(database_url, [(ANNA, "Anna Nowak", "pl"), ("jan@example.pl", "Jan", "pl")])
    await start_service(config)
    erase = change("erase", list=None)
    await publish(portal, erase)
    await applied(db, erase)

    tables = ["subscribers", "subscriptions", "deliveries", "suppressions", "jobs", "issues"]
    dump = json.dumps(
        {t: [dict(r) for r in await db.fetch(f"SELECT * FROM {t}")] for t in tables}, default=str
    )
    assert "anna" not in dump.lower()
    assert (
        await db.fetchval(
            "SELECT reason FROM suppressions WHERE address_key = $1", address_key(HASH_KEY, ANNA)
        )
        == "erased"
    )

    newsletter = issue()
    await portal.publish(encode(newsletter), routing_key="newsletter")
    await until_state(db, newsletter["id"], "done")
    assert [m.rcpt_tos for m in smtp_server.received] == [("jan@example.pl",)]

    # A receipt is part of a purchase: erasure does not stop one (a complaint would).
    await portal.publish(encode(receipt(to={"email": ANNA, "name": "Anna"})), routing_key="receipt")

    async def receipt_arrived() -> bool:
        return any(m.rcpt_tos == (ANNA,) for m in smtp_server.received)

    await eventually(receipt_arrived)

    # Subscribing again, asked for, lifts the erasure.
    again = change("subscribe", confirmed=True)
    await publish(portal, again)
    await applied(db, again)
    assert await status(db) == "subscribed"
    assert (
        await db.fetchval(
            "SELECT count(*) FROM suppressions WHERE address_key = $1", address_key(HASH_KEY, ANNA)
        )
        == 0
    )


async def test_invalid_changes_are_parked(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    db: asyncpg.Connection,
) -> None:
    await start_service(config)
    await publish(
        portal,
        change("subscribe", list="no-such-list"),
        change("subscribe", email="not an address"),
    )
    found = reasons(await parked(db, 2))
    assert found[0] == ("email: not a valid e-mail address (An email address must have an @-sign.)")
    assert found[1] == "list: no list 'no-such-list' is configured"
