"""Newsletters end to end: subscribers in PostgreSQL, an issue on RabbitMQ, mail at the relay."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import dkim

from mailer.adapters.broker import Broker
from mailer.adapters.issues import Issues
from mailer.core.tokens import Subscription, TokenKeys, unsubscribe_token
from mailer.parts.database import Database
from tests.conftest import SECRET, DkimKeys, StartService
from tests.support.dead_letters import parked, reasons
from tests.support.dkim import signature_tags
from tests.support.http import base_url
from tests.support.jobs import encode, receipt
from tests.support.newsletters import (
    issue,
    issue_state,
    outcomes,
    people,
    subscribe,
    until_state,
)
from tests.support.outage import database_away
from tests.support.smtp import Received, SmtpServer
from tests.support.waiting import eventually

UNSUBSCRIBE = re.compile(
    rb"\r\nList-Unsubscribe: <(https://mail\.lucid\.example/u/[A-Za-z0-9_-]{28})>\r\n"
)


async def publish(portal: Broker, job: dict[str, Any], routing_key: str = "newsletter") -> None:
    await portal.publish(encode(job), routing_key=routing_key)


def by_recipient(received: list[Received]) -> Counter[str]:
    return Counter(r.rcpt_tos[0] for r in received)


def unsubscribe_url(message: Received) -> str:
    found = UNSUBSCRIBE.search(message.data)
    assert found is not None, "List-Unsubscribe is not a plain URL on one line"
    return found[1].decode()


async def token_for(db: asyncpg.Connection, subscriber_id: int) -> str:
    """The token of a subscriber's unsubscribe link, as their message carries it."""
    list_id = await db.fetchval("SELECT id FROM lists WHERE slug = 'lucid-news'")
    return unsubscribe_token(
        TokenKeys.from_secrets(SECRET.encode()), Subscription(subscriber_id, list_id)
    )


async def test_an_issue_reaches_every_subscriber_once_in_their_language(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
    dkim_keys: DkimKeys,
) -> None:
    audience = people(3000)
    await subscribe(database_url, audience)
    await start_service(config)
    job = issue()
    await publish(portal, job)
    await until_state(db, job["id"], "done", timeout=120)

    counts = by_recipient(smtp_server.received)
    assert counts == Counter({email: 1 for email, _, _ in audience})
    assert await outcomes(db, job["id"]) == {"sent": 3000}
    locales = {email: (name, locale) for email, name, locale in audience}
    for message in smtp_server.received[::60]:  # a sample, parsed in full
        email = message.rcpt_tos[0]
        name, locale = locales[email]
        parsed = message.parsed()
        expected_subject = (
            "What's new in LucidCRM — November 2026"
            if locale == "en"
            else "Nowości w LucidCRM — listopad 2026"
        )  # the list's default: pl
        assert parsed["Subject"] == expected_subject
        assert parsed["From"] == "Lucid News <news@lucid.example>"
        assert parsed["To"] == (f"{name} <{email}>" if name else email)
        assert parsed["List-Id"] == "Lucid News <lucid-news.lucid.example>"
        assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in message.data
        url = unsubscribe_url(message)
        text = parsed.get_body(("plain",))
        html = parsed.get_body(("html",))
        assert text is not None and html is not None
        assert url in text.get_content()
        assert f'href="{url}"' in html.get_content()
        greeting = (
            (f"Hi {name}," if locale == "en" else f"Cześć {name},")
            if name
            else ("Hello," if locale == "en" else "Dzień dobry,")
        )
        assert greeting in text.get_content()
        assert re.fullmatch(rf"<{job['id']}\.\d+@lucid\.example>", parsed["Message-ID"])
        verifier = dkim.DKIM(message.data)
        assert verifier.verify(idx=0, dnsfunc=dkim_keys.dns)
        assert verifier.verify(idx=1, dnsfunc=dkim_keys.dns)
        signed_names = signature_tags(message.data)["h"].split(":")
        for name in ("list-id", "list-unsubscribe", "list-unsubscribe-post"):
            assert signed_names.count(name) == 2  # covered, and over-signed
    assert len({unsubscribe_url(m) for m in smtp_server.received}) == 3000  # personal links


async def test_staff_html_is_sanitized_and_a_text_part_made_from_it(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    await subscribe(database_url, [("anna@example.pl", "Anna", "pl")])
    await start_service(config)
    dirty = (
        '<p onclick="steal()">Nowy <b>Kanban</b><script>steal()</script>'
        '<a href="javascript:steal()">tu</a><img src="data:image/png;base64,AAAA">'
        '<form action="https://evil.example"><input name="p"></form></p>'
    )
    job = issue(data={"articles": [{"title": "Kanban", "body_html": dirty}]})
    await publish(portal, job)
    await until_state(db, job["id"], "done")
    (message,) = smtp_server.received
    parsed = message.parsed()
    html = parsed.get_body(("html",))
    text = parsed.get_body(("plain",))
    assert html is not None and text is not None
    for banned in ("onclick", "<script", "steal()", "javascript:", "data:", "<form", "<input"):
        assert banned not in html.get_content()
    assert "<b>Kanban</b>" in html.get_content()
    assert "Nowy Kanban" in text.get_content()


async def test_an_issue_that_cannot_be_rendered_is_parked_before_anything_is_sent(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    await subscribe(database_url, people(20))
    await start_service(config)
    bad_link = issue(
        data={"articles": [{"title": "x", "body_html": "<p>x</p>", "url": "javascript:alert(1)"}]}
    )
    no_default = issue(subject={"en": "Only English"})
    unknown_list = issue(list="no-such-list")
    for job in (bad_link, no_default, unknown_list):
        await publish(portal, job)
    assert reasons(await parked(db, 3)) == sorted(
        [
            "template newsletter/pl: link 'javascript:alert(1)' must be an http(s) or mailto URL",
            "subject: needs the list's default locale 'pl'",
            "list: no list 'no-such-list' is configured",
        ]
    )
    assert smtp_server.received == []
    assert await db.fetchval("SELECT count(*) FROM issues") == 0


async def test_only_current_subscribers_get_it(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    ids = await subscribe(database_url, people(10))
    await db.execute(
        "UPDATE subscriptions SET status = 'unsubscribed' WHERE subscriber_id = $1",
        ids["person1@example.pl"],
    )
    await db.execute(
        "INSERT INTO suppressions (address_key, reason)"
        " SELECT address_key, 'hard_bounce' FROM subscribers WHERE id = $1",
        ids["person2@example.pl"],
    )
    await start_service(config)
    job = issue()
    await publish(portal, job)
    await until_state(db, job["id"], "done")
    got = set(by_recipient(smtp_server.received))
    assert "person1@example.pl" not in got and "person2@example.pl" not in got
    assert len(got) == 8
    assert await outcomes(db, job["id"]) == {"sent": 8, "suppressed": 1}


async def test_a_one_click_unsubscribe_mid_send_stops_that_message(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    audience = people(300)
    ids = await subscribe(database_url, audience)
    config["newsletter"] = {"rate": 100}  # three seconds of sending
    service = await start_service(config)
    job = issue()
    await publish(portal, job)

    async def under_way() -> bool:
        return len(smtp_server.received) >= 20

    await eventually(under_way)
    last = max(ids, key=lambda email: ids[email])  # sent last: deliveries go in id order
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            f"{base_url(service)}/u/{await token_for(db, ids[last])}",
            data={"List-Unsubscribe": "One-Click"},
            allow_redirects=False,
        )
        assert response.status == 200
    await until_state(db, job["id"], "done", timeout=60)
    assert last not in by_recipient(smtp_server.received)
    assert len(smtp_server.received) == 299
    status = await db.fetchrow(
        "SELECT status, detail FROM deliveries WHERE job_id = $1 AND subscriber_id = $2",
        UUID(job["id"]),
        ids[last],
    )
    assert tuple(status) == ("suppressed", "unsubscribed")


async def test_an_unsubscribe_for_a_message_already_in_hand_is_honoured(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    """The chunk is claimed (consent read) before the opt-out; its messages go one by one."""
    ids = await subscribe(database_url, people(30))
    smtp_server.data_delay = 0.1
    config["newsletter"] = {"chunk_size": 30, "pool_size": 1}
    service = await start_service(config)
    job = issue()
    await publish(portal, job)

    async def started() -> bool:
        return len(smtp_server.received) >= 1

    await eventually(started)
    last = max(ids, key=lambda email: ids[email])
    assert (
        await db.fetchval("SELECT status FROM deliveries WHERE subscriber_id = $1", ids[last])
        == "sending"
    )
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            f"{base_url(service)}/u/{await token_for(db, ids[last])}",
            data={"action": "unsubscribe"},
            allow_redirects=False,
        )
        assert response.status == 200
    await until_state(db, job["id"], "done")
    assert last not in by_recipient(smtp_server.received)
    assert await outcomes(db, job["id"]) == {"sent": 29, "suppressed": 1}


async def test_pause_resume_and_cancel(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    await subscribe(database_url, people(200))
    config["newsletter"] = {"rate": 50}
    service = await start_service(config)
    issues = Issues(service.part(Database).pool)
    job = issue()
    await publish(portal, job)

    async def some() -> bool:
        return len(smtp_server.received) >= 20

    await eventually(some)
    assert await issues.set_state(UUID(job["id"]), "pause") == ("sending", "paused")
    await asyncio.sleep(0.5)  # messages handed to the relay before the pause may finish
    at_pause = len(smtp_server.received)
    await asyncio.sleep(2)
    assert len(smtp_server.received) == at_pause  # nothing new while paused
    assert await issue_state(db, job["id"]) == "paused"
    assert await issues.set_state(UUID(job["id"]), "resume") == ("paused", "sending")
    await until_state(db, job["id"], "done", timeout=60)
    assert by_recipient(smtp_server.received) == Counter(
        {email: 1 for email, _, _ in people(200)}
    )  # nobody twice, nobody skipped

    second = issue()
    await publish(portal, second)

    async def second_started() -> bool:
        return len(smtp_server.received) >= 220

    await eventually(second_started)
    assert await issues.set_state(UUID(second["id"]), "cancel") == ("sending", "cancelled")
    await asyncio.sleep(0.5)
    after_cancel = len(smtp_server.received)
    await asyncio.sleep(1.5)
    assert len(smtp_server.received) == after_cancel

    async def settled() -> dict[str, int] | None:  # the chunk in hand at the cancel records too
        counts = await outcomes(db, second["id"])
        return counts if set(counts) <= {"sent", "cancelled"} else None

    try:
        counts = await eventually(settled)
    except AssertionError:
        raise AssertionError(await outcomes(db, second["id"])) from None
    assert counts["cancelled"] > 0
    assert counts["sent"] + counts["cancelled"] == 200
    assert counts["sent"] == after_cancel - 200
    assert await issue_state(db, second["id"]) == "cancelled"


async def test_send_at_holds_the_issue_across_a_restart(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    await subscribe(database_url, people(5))
    first = await start_service(config)
    send_at = datetime.now(UTC) + timedelta(seconds=3)
    job = issue(send_at=send_at.isoformat())
    await publish(portal, job)

    async def stored() -> bool:
        return await issue_state(db, job["id"]) == "scheduled"

    await eventually(stored)
    await first.stop()
    await asyncio.sleep(1)
    assert smtp_server.received == []
    await start_service(config)
    await until_state(db, job["id"], "done")
    assert len(smtp_server.received) == 5
    assert min(m.at for m in smtp_server.received) > 0
    sent_at = await db.fetchval("SELECT started_at FROM issues WHERE id = $1", UUID(job["id"]))
    assert sent_at >= send_at


async def test_the_same_issue_published_twice_goes_out_once(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    await subscribe(database_url, people(10))
    await start_service(config)
    job = issue()
    await publish(portal, job)
    await publish(portal, job)
    await until_state(db, job["id"], "done")
    await publish(portal, job)
    await asyncio.sleep(1)
    assert len(smtp_server.received) == 10


async def test_a_newsletter_in_flight_does_not_delay_a_receipt(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    await subscribe(database_url, people(100, domain="slow.example"))
    smtp_server.domain_delays["slow.example"] = 0.5  # fifty seconds of newsletter at 2 connections
    config["newsletter"] = {"pool_size": 2}
    await start_service(config)
    job = issue()
    await publish(portal, job)

    async def newsletter_busy() -> bool:
        return smtp_server.in_flight["slow.example"] == 2

    await eventually(newsletter_busy)
    await portal.publish(encode(receipt()), routing_key="receipt")

    async def receipt_arrived() -> bool:
        return any(m.rcpt_tos == ("jan.kowalski@example.pl",) for m in smtp_server.received)

    await eventually(receipt_arrived, timeout=5)
    assert await issue_state(db, job["id"]) == "sending"  # the newsletter is still going


async def test_a_4xx_is_retried_and_slows_that_domain_down(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    await subscribe(database_url, people(5, domain="busy.example") + people(5)[1:])
    smtp_server.domain_replies["busy.example"] = "451 4.7.1 Slow down, please"
    await start_service(config)
    job = issue()
    await publish(portal, job)

    async def deferred() -> bool:
        # The five busy ones cycle between retrying and sending every few tenths of a
        # second: all tried and none sent, rather than all caught `retrying` at one moment.
        counts = await outcomes(db, job["id"])
        refused = await db.fetchval(
            "SELECT count(*) FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id"
            " WHERE d.job_id = $1 AND s.email LIKE '%busy.example' AND d.attempts >= 1"
            " AND d.status <> 'sent'",
            UUID(job["id"]),
        )
        return counts.get("sent") == 4 and refused == 5

    await eventually(deferred)

    async def slowed() -> float | None:  # written as the slots are handed back, after the outcome
        found: float | None = await db.fetchval(
            "SELECT factor FROM throttle WHERE key = 'busy.example'"
        )
        return found if found is not None and found < 1 else None

    factor = await eventually(slowed, timeout=5)
    assert factor < 1
    del smtp_server.domain_replies["busy.example"]
    await until_state(db, job["id"], "done", timeout=30)
    assert await outcomes(db, job["id"]) == {"sent": 9}
    attempts = await db.fetch(
        "SELECT attempts FROM deliveries d JOIN subscribers s"
        " ON s.id = d.subscriber_id WHERE s.email LIKE '%busy.example'"
    )
    assert all(row["attempts"] >= 2 for row in attempts)


async def test_rates_and_domain_concurrency_hold(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    await subscribe(database_url, people(60, domain="wp.pl") + people(90, domain="onet.pl"))
    smtp_server.domain_delays["wp.pl"] = 0.05
    config["newsletter"] = {
        "rate": 60,
        "pool_size": 8,
        "domains": {"wp.pl": {"concurrency": 2}, "onet.pl": {"rate": 20}},
    }
    await start_service(config)
    job = issue()
    await publish(portal, job)
    await until_state(db, job["id"], "done", timeout=60)
    assert len(smtp_server.received) == 150
    assert smtp_server.most_in_flight["wp.pl"] <= 2

    def busiest_second(domain: str | None) -> int:
        times = sorted(
            m.at
            for m in smtp_server.received
            if domain is None or m.rcpt_tos[0].endswith("@" + domain)
        )
        return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)

    # A bucket holds one second of its rate; so at most twice the rate in any one second.
    assert busiest_second(None) <= 2 * 60
    assert busiest_second("onet.pl") <= 2 * 20


async def test_an_issue_that_can_no_longer_be_rendered_is_paused_not_lost(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    await subscribe(database_url, people(5))
    first = await start_service(config)
    job = issue(send_at=(datetime.now(UTC) + timedelta(seconds=2)).isoformat())
    await publish(portal, job)

    async def stored() -> bool:
        return await issue_state(db, job["id"]) == "scheduled"

    await eventually(stored)
    await first.stop()
    # As if the templates had changed under it: the stored issue no longer renders.
    await db.execute(
        "UPDATE issues SET payload = jsonb_set(payload, '{template}', '\"receipt\"') WHERE id = $1",
        UUID(job["id"]),
    )
    await start_service(config)
    await until_state(db, job["id"], "paused")
    assert smtp_server.received == []
    assert await outcomes(db, job["id"]) == {"pending": 5}


async def test_a_database_outage_mid_issue_sends_nobody_twice(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    database_url: str,
) -> None:
    audience = people(300)
    await subscribe(database_url, audience)
    smtp_server.data_delay = 0.05  # with 4 connections, about 4 s for everyone
    config["newsletter"] = {"chunk_size": 30, "pool_size": 4}
    await start_service(config)
    job = issue()
    await publish(portal, job)

    async def under_way() -> bool:
        return len(smtp_server.received) >= 20

    await eventually(under_way)
    async with database_away(database_url):
        # Longer than the lease (3 s in tests): the chunk in hand goes on sending meanwhile,
        # and what it cannot record must not be taken back and sent again.
        await asyncio.sleep(8)
    checker = await asyncpg.connect(database_url)  # the test's own connection was cut too
    try:
        await until_state(checker, job["id"], "done", timeout=60)
        assert await outcomes(checker, job["id"]) == {"sent": 300}
    finally:
        await checker.close()
    assert set(by_recipient(smtp_server.received).values()) == {1}
    assert len(smtp_server.received) == 300
