"""Bounces end to end: the envelope a relay receives, reports sent to the receiver over SMTP,
and what they change in the ledger, the suppression list and the subscriptions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import dkim
import pytest

from mailer.adapters.bounces import BounceReports
from mailer.adapters.inbound import CONNECTIONS_PER_SOURCE
from mailer.core.bounce_rules import Effect
from mailer.core.return_paths import ReturnPathKeys, decode, return_path
from mailer.metrics import Metrics
from mailer.parts.bounces import BounceReception
from mailer.service import Service
from mailer.worker.bounces import BounceProcessor, SoftRule
from mailer.worker.classifiers import ClassifierPool
from tests.conftest import SECRET, DkimKeys, StartService
from tests.support.bounces import BOUNCE_DOMAIN, arf, bounce_config, dsn, send_report
from tests.support.http import base_url, metric
from tests.support.jobs import receipt
from tests.support.newsletters import HASH_KEY, issue, outcomes, subscribe, until_state
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually
from tests.worker.test_receipts import key_of, publish, settled

ADDRESS = "jan.kowalski@example.pl"
KEYS = ReturnPathKeys.from_secrets(SECRET.encode())


async def sent_receipt(
    portal: Any, db: asyncpg.Connection, smtp_server: SmtpServer, to: str = ADDRESS
) -> tuple[int, str]:
    """A receipt sent to `to`: its delivery id and the envelope sender it went with."""
    job = receipt(to={"email": to, "name": "Jan Kowalski"})
    await publish(portal, job)
    outcome = await settled(db, job["id"])
    assert outcome["status"] == "sent"
    delivery_id: int = await db.fetchval(
        "SELECT id FROM deliveries WHERE job_id = $1", UUID(job["id"])
    )
    (received,) = smtp_server.to(to)[-1:]
    return delivery_id, received.mail_from


async def delivery(db: asyncpg.Connection, delivery_id: int) -> asyncpg.Record:
    found = await db.fetchrow(
        "SELECT status, bounce_kind, bounce_status, bounce_diagnostic, detail FROM deliveries"
        " WHERE id = $1",
        delivery_id,
    )
    assert found is not None
    return found


async def classified(db: asyncpg.Connection, report_id: int) -> asyncpg.Record:
    async def probe() -> asyncpg.Record | None:
        return await db.fetchrow(
            "SELECT kind, reason, outcome, domain, status FROM bounce_reports"
            " WHERE id = $1 AND classified_at IS NOT NULL",
            report_id,
        )

    return await eventually(probe, timeout=10)


def stored_id(text: str) -> int:
    return int(text.rsplit(" ", 1)[1])


async def start_with_bounces(
    config: dict[str, Any], start_service: StartService, **bounces: object
) -> Service:
    config["bounces"] = bounce_config(**bounces)
    service = await start_service(config)
    assert service.runs(BounceReception)
    return service


def port_of(service: Service) -> int:
    return service.part(BounceReception).bounces.receiver.port


# ---------------------------------------------------------------- outgoing


async def test_a_receipt_goes_out_from_its_own_return_path_asking_for_dsns(
    config: dict[str, Any],
    start_service: StartService,
    portal: Any,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    smtp_server.dsn = True
    service = await start_with_bounces(config, start_service)
    async with (
        aiohttp.ClientSession() as session,
        session.get(base_url(service) + "/readyz") as response,
    ):
        assert response.status == 200
        check = (await response.json())["checks"]["bounces"]
        assert check == {"ok": True, "detail": f"receiving on 127.0.0.1:{port_of(service)}"}
    delivery_id, mail_from = await sent_receipt(portal, db, smtp_server)
    local, _, domain = mail_from.partition("@")
    assert domain == BOUNCE_DOMAIN
    assert local.startswith("b-") and len(local) == 39  # RFC 5321: at most 64
    decoded = decode(KEYS, mail_from, today=datetime.now(UTC).date(), max_age_days=1)
    assert decoded.valid and decoded.delivery_id == delivery_id
    (received,) = smtp_server.received
    assert set(received.mail_options) == {"RET=HDRS", f"ENVID={delivery_id}"}
    assert received.rcpt_options == ("NOTIFY=FAILURE,DELAY",)
    assert ADDRESS not in mail_from


async def test_without_dsn_at_the_relay_no_dsn_parameters_are_sent(
    config: dict[str, Any],
    start_service: StartService,
    portal: Any,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    await start_with_bounces(config, start_service)  # aiosmtpd alone offers no DSN
    _, mail_from = await sent_receipt(portal, db, smtp_server)
    assert mail_from.endswith("@" + BOUNCE_DOMAIN)
    (received,) = smtp_server.received
    assert received.mail_options == () and received.rcpt_options == ()


async def test_without_a_bounces_section_the_envelope_sender_stays_the_from_address(
    config: dict[str, Any],
    start_service: StartService,
    portal: Any,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    smtp_server.dsn = True
    service = await start_service(config)
    assert not service.runs(BounceReception)
    _, mail_from = await sent_receipt(portal, db, smtp_server)
    assert mail_from == "no-reply@lucid.example"
    (received,) = smtp_server.received
    assert received.mail_options == () and received.rcpt_options == ()


async def test_a_newsletter_carries_a_signed_feedback_id(
    config: dict[str, Any],
    start_service: StartService,
    portal: Any,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
    dkim_keys: DkimKeys,
) -> None:
    await start_with_bounces(config, start_service)
    await subscribe(database_url, [("anna@example.pl", "Anna", "pl")])
    job = issue()
    await portal.publish(json_bytes(job), routing_key="newsletter")
    await until_state(db, job["id"], "done")
    (received,) = smtp_server.received
    message = received.parsed()
    assert message["Feedback-ID"] == f"{UUID(job['id']).hex}:lucid-news:newsletter:mailer"
    assert received.mail_from.endswith("@" + BOUNCE_DOMAIN)
    signature = message["DKIM-Signature"]
    assert "feedback-id" in signature.lower()
    assert dkim.DKIM(received.data).verify(dnsfunc=dkim_keys.dns)


def json_bytes(job: dict[str, Any]) -> bytes:
    return json.dumps(job, ensure_ascii=False).encode()


# ---------------------------------------------------------------- inbound: what applies


async def test_a_hard_bounce_suppresses_the_address_for_the_next_receipt(
    config: dict[str, Any],
    start_service: StartService,
    portal: Any,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    service = await start_with_bounces(config, start_service)
    delivery_id, verp = await sent_receipt(portal, db, smtp_server)
    answer = await send_report(port_of(service), verp, dsn(verp, ADDRESS))
    assert (answer.stage, answer.code) == ("data", 250)
    report = await classified(db, stored_id(answer.text))
    assert (report["kind"], report["domain"], report["status"]) == ("hard", "example.pl", "5.1.1")
    row = await delivery(db, delivery_id)
    assert (row["status"], row["bounce_kind"], row["bounce_status"]) == ("bounced", "hard", "5.1.1")
    assert row["bounce_diagnostic"].startswith("550 5.1.1 <address>: Recipient")
    assert ADDRESS not in row["bounce_diagnostic"]
    suppression = await db.fetchrow(
        "SELECT reason, report_id FROM suppressions WHERE address_key = $1", key_of(ADDRESS)
    )
    assert tuple(suppression) == ("hard_bounce", stored_id(answer.text))
    assert await metric(service, "mailer_bounce_reports_total", kind="hard") == 1

    job = receipt()
    await publish(portal, job)
    assert (await settled(db, job["id"]))["status"] == "suppressed"
    assert len(smtp_server.to(ADDRESS)) == 1


async def test_a_report_classified_twice_changes_nothing_the_second_time(
    config: dict[str, Any],
    start_service: StartService,
    portal: Any,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    service = await start_with_bounces(config, start_service)
    delivery_id, verp = await sent_receipt(portal, db, smtp_server)
    raw = dsn(verp, ADDRESS, status="4.2.2", diagnostic="smtp; 452 4.2.2 Mailbox full")
    answer = await send_report(port_of(service), verp, raw)
    report_id = stored_id(answer.text)
    await classified(db, report_id)
    processor = service.part(BounceReception).bounces.processor
    assert await processor.classify(report_id) is None
    await db.execute(  # as after a crash before the mark, once its claim has lapsed
        "UPDATE bounce_reports SET classified_at = NULL, claimed_until = NULL WHERE id = $1",
        report_id,
    )
    again = await processor.classify(report_id)
    assert isinstance(again, Effect)
    assert await db.fetchval("SELECT count(*) FROM soft_bounce_days") == 1
    assert (await delivery(db, delivery_id))["status"] == "bounced"
    assert await db.fetchval("SELECT count(*) FROM suppressions") == 0
    outcome = await db.fetchval("SELECT outcome FROM bounce_reports WHERE id = $1", report_id)
    assert outcome == "nothing more: the delivery had bounced already"


async def test_a_policy_bounce_never_counts_against_the_recipient(
    config: dict[str, Any],
    start_service: StartService,
    portal: Any,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    service = await start_with_bounces(config, start_service)
    delivery_id, verp = await sent_receipt(portal, db, smtp_server)
    raw = dsn(
        verp,
        ADDRESS,
        status="5.7.1",
        diagnostic="smtp; 554 5.7.1 Service unavailable; client host blocked using Spamhaus",
    )
    answer = await send_report(port_of(service), verp, raw)
    report = await classified(db, stored_id(answer.text))
    assert (report["kind"], report["domain"]) == ("policy", "example.pl")
    row = await delivery(db, delivery_id)
    assert (row["status"], row["bounce_kind"]) == ("bounced", "policy")
    assert await db.fetchval("SELECT count(*) FROM suppressions") == 0
    assert await db.fetchval("SELECT count(*) FROM soft_bounce_days") == 0
    assert await metric(service, "mailer_bounce_alerts_total", alert="policy") == 1


async def test_a_delay_notice_and_an_auto_reply_change_nothing(
    config: dict[str, Any],
    start_service: StartService,
    portal: Any,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    service = await start_with_bounces(config, start_service)
    delivery_id, verp = await sent_receipt(portal, db, smtp_server)
    delayed = dsn(verp, ADDRESS, status="4.4.1", action="delayed", diagnostic="smtp; 421 later")
    vacation = (
        f"From: <{ADDRESS}>\r\nTo: <{verp}>\r\nSubject: Out of office\r\n"
        "Auto-Submitted: auto-replied\r\n\r\nI am away until Monday.\r\n"
    ).encode()
    for raw in (delayed, vacation):
        answer = await send_report(port_of(service), verp, raw)
        assert (await classified(db, stored_id(answer.text)))["kind"] == "ignored"
    assert (await delivery(db, delivery_id))["status"] == "sent"
    assert await db.fetchval("SELECT count(*) FROM suppressions") == 0


async def test_a_complaint_unsubscribes_from_every_list_but_receipts_still_go(
    config: dict[str, Any],
    start_service: StartService,
    portal: Any,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    config["lists"]["lucid-offers"] = {
        "name": "Lucid Offers",
        "from": "Lucid Offers <offers@lucid.example>",
    }
    service = await start_with_bounces(config, start_service)
    await subscribe(database_url, [(ADDRESS, "Jan", "pl"), ("ola@example.pl", "Ola", "pl")])
    await subscribe(database_url, [(ADDRESS, "Jan", "pl")], list_slug="lucid-offers")
    job = issue()
    await portal.publish(json_bytes(job), routing_key="newsletter")
    await until_state(db, job["id"], "done")
    (sent,) = smtp_server.to(ADDRESS)
    answer = await send_report(port_of(service), sent.mail_from, arf(sent.mail_from, ADDRESS))
    report = await classified(db, stored_id(answer.text))
    assert report["kind"] == "complaint"
    statuses = await db.fetch(
        "SELECT s.email, sub.status, sub.source FROM subscriptions sub"
        " JOIN subscribers s ON s.id = sub.subscriber_id ORDER BY s.email, sub.list_id"
    )
    assert [tuple(r) for r in statuses] == [
        (ADDRESS, "unsubscribed", "complaint"),
        (ADDRESS, "unsubscribed", "complaint"),
        ("ola@example.pl", "subscribed", "import"),
    ]
    assert await metric(service, "mailer_complaints_total") == 1
    # One complaint in two deliveries is over 0.1 %.
    assert await metric(service, "mailer_bounce_alerts_total", alert="complaint_rate") == 1
    listed = await db.fetchval(
        "SELECT count(*) FROM bounce_reports WHERE kind = 'complaint'"
    )  # flagged for operators (`mailer bounces list --kind complaint`)
    assert listed == 1

    later = receipt()
    await publish(portal, later)
    assert (await settled(db, later["id"]))["status"] == "sent"  # a purchase is not a list


# ---------------------------------------------------------------- forged and hostile reports


async def test_forged_expired_misaddressed_huge_and_flooding_reports_change_nobody(
    config: dict[str, Any],
    start_service: StartService,
    portal: Any,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    service = await start_with_bounces(
        config, start_service, max_report_bytes=64 * 1024, burst=12, rate=0.001
    )
    port = port_of(service)
    first, verp = await sent_receipt(portal, db, smtp_server)
    other_address = "ola@example.pl"
    second, other_verp = await sent_receipt(portal, db, smtp_server, to=other_address)
    local = verp.partition("@")[0]
    flipped = local[:-1] + ("a" if local[-1] != "a" else "b")
    expired = return_path(KEYS, first, datetime.now(UTC).date() - timedelta(days=31), BOUNCE_DOMAIN)
    wrong_key = return_path(
        ReturnPathKeys.from_secrets(b"another-secret-" * 3), first, date.today(), BOUNCE_DOMAIN
    )
    refused = {
        "malformed": f"b-nosuchtoken@{BOUNCE_DOMAIN}",
        "forged": f"{flipped}@{BOUNCE_DOMAIN}",
        "expired": expired,
        "relay": f"{local}@example.pl",
    }
    refused["forged-key"] = wrong_key
    for reason, rcpt in refused.items():
        answer = await send_report(port, rcpt, dsn(rcpt, ADDRESS))
        assert (answer.stage, answer.code) == ("rcpt", 550), (reason, answer)
    # A valid token of one delivery, with a report about the other's recipient or envelope.
    answer = await send_report(port, other_verp, dsn(other_verp, ADDRESS))
    assert answer.code == 250
    report = await classified(db, stored_id(answer.text))
    assert report["outcome"] == "changes nothing: it names another recipient"
    answer = await send_report(port, verp, dsn(verp, ADDRESS, envelope_id=str(second)))
    report = await classified(db, stored_id(answer.text))
    assert report["outcome"] == "changes nothing: its envelope id names another delivery"
    # Too large: refused at DATA, nothing stored.
    huge = dsn(verp, ADDRESS) + b"X" * 80 + (b"\r\n" + b"Y" * 998) * 100
    answer = await send_report(port, verp, huge)
    assert (answer.stage, answer.code) == ("data", 552)
    # A flood from one source: refused at MAIL FROM once its bucket of 12 is empty (8 taken).
    flood = dsn(other_verp, ADDRESS)
    answers = [await send_report(port, other_verp, flood) for _ in range(8)]
    flooded = [a for a in answers if a.code == 250]
    assert len(flooded) == 4
    assert all((a.stage, a.code) == ("mail", 450) for a in answers[4:])
    for answer in flooded:
        await classified(db, stored_id(answer.text))

    assert (await delivery(db, first))["status"] == "sent"
    assert (await delivery(db, second))["status"] == "sent"
    assert await db.fetchval("SELECT count(*) FROM suppressions") == 0
    assert await db.fetchval("SELECT count(*) FROM soft_bounce_days") == 0
    assert await db.fetchval("SELECT count(*) FROM bounce_reports") == 2 + 4
    for reason in ("malformed", "forged", "expired", "relay", "rate"):
        assert await metric(service, "mailer_bounce_reports_refused_total", reason=reason) >= 1
    assert await metric(service, "mailer_bounce_reports_total", kind="mismatched") == 6


async def test_a_report_is_refused_with_451_while_the_database_cannot_take_it(
    config: dict[str, Any],
    start_service: StartService,
    portal: Any,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    service = await start_with_bounces(config, start_service)
    delivery_id, verp = await sent_receipt(portal, db, smtp_server)
    await db.execute("ALTER TABLE bounce_reports RENAME TO bounce_reports_away")
    try:
        answer = await send_report(port_of(service), verp, dsn(verp, ADDRESS))
    finally:
        await db.execute("ALTER TABLE bounce_reports_away RENAME TO bounce_reports")
    assert answer.code >= 400  # not 250: the sender keeps the report and tries again
    assert (await delivery(db, delivery_id))["status"] == "sent"


# ---------------------------------------------------------------- soft bounces over a calendar


@pytest.fixture
async def pool(database_url: str) -> Any:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    yield pool
    await pool.close()


@pytest.fixture
async def classifiers() -> AsyncIterator[ClassifierPool]:
    """The classifier processes a BounceProcessor made by hand uses, as the service's do."""
    pool = ClassifierPool()
    yield pool
    await pool.close()


class Calendar:
    def __init__(self) -> None:
        self.today = date.today()

    def now(self) -> datetime:
        return datetime(self.today.year, self.today.month, self.today.day, 12, tzinfo=UTC)


async def soft_bounces(
    pool: asyncpg.Pool,
    classifiers: ClassifierPool,
    delivery_ids: list[int],
    days: list[date],
) -> BounceProcessor:
    """One soft bounce (mailbox full) a day, each for the next delivery."""
    calendar = Calendar()
    reports = BounceReports(pool)
    processor = BounceProcessor(
        reports=reports,
        hash_key=HASH_KEY,
        soft=SoftRule(threshold=5, window_days=30, expire_after_days=90),
        complaint_alert_rate=0.001,
        retention_days=60,
        metrics=Metrics(),
        clock=calendar.now,
        classifier=classifiers,
    )
    for delivery_id, day in zip(delivery_ids, days, strict=True):
        calendar.today = day
        verp = return_path(KEYS, delivery_id, day, BOUNCE_DOMAIN)
        raw = dsn(verp, ADDRESS, status="5.2.2", diagnostic="smtp; 552 5.2.2 Mailbox full")
        report_id = await reports.store(peer="127.0.0.1", delivery_id=delivery_id, raw=raw)
        effect = await processor.classify(report_id)
        assert isinstance(effect, Effect) and effect.kind == "soft"
    return processor


async def sent_deliveries(db: asyncpg.Connection, count: int) -> list[int]:
    """Receipts to ADDRESS recorded as sent, as if the relay had taken them."""
    ids = []
    for n in range(count):
        job = UUID(int=n + 1)
        await db.execute("INSERT INTO jobs (id, kind, digest) VALUES ($1, 'receipt', '\\x00')", job)
        ids.append(
            await db.fetchval(
                "INSERT INTO deliveries (job_id, recipient_key, status) VALUES ($1, $2, 'sent')"
                " RETURNING id",
                job,
                key_of(ADDRESS),
            )
        )
    return ids


async def suppression(db: asyncpg.Connection) -> str | None:
    """What a newsletter claim sees for the address now."""
    reason: str | None = await db.fetchval(
        "SELECT reason FROM suppressions WHERE address_key = $1"
        " AND (expires_at IS NULL OR expires_at > now())",
        key_of(ADDRESS),
    )
    return reason


async def test_four_soft_bounce_days_do_not_suppress_and_five_do(
    pool: asyncpg.Pool, classifiers: ClassifierPool, db: asyncpg.Connection
) -> None:
    today = date.today()
    ids = await sent_deliveries(db, 6)
    # Two bounces on one day are one point: four days, five reports.
    days = [today - timedelta(days=d) for d in (20, 15, 15, 9, 1)]
    await soft_bounces(pool, classifiers, ids[:5], days)
    assert await db.fetchval("SELECT count(*) FROM soft_bounce_days") == 4
    assert await suppression(db) is None
    await soft_bounces(pool, classifiers, ids[5:], [today])
    assert await suppression(db) == "soft_bounce"
    expires = await db.fetchval("SELECT expires_at FROM suppressions")
    assert expires.date() == today + timedelta(days=90)
    statuses = await db.fetch("SELECT DISTINCT status, bounce_kind FROM deliveries")
    assert [tuple(r) for r in statuses] == [("bounced", "soft")]


async def test_a_soft_bounce_suppression_lifts_after_its_expiry(
    pool: asyncpg.Pool, classifiers: ClassifierPool, db: asyncpg.Connection
) -> None:
    today = date.today()
    ids = await sent_deliveries(db, 5)
    days = [today - timedelta(days=d) for d in (104, 103, 102, 101, 100)]  # held until day -10
    processor = await soft_bounces(pool, classifiers, ids, days)
    assert await db.fetchval("SELECT count(*) FROM suppressions") == 1
    assert await suppression(db) is None  # lapsed: claims no longer see it
    await processor.sweep()
    assert await db.fetchval("SELECT count(*) FROM suppressions") == 0


async def test_a_soft_suppression_holds_newsletters_but_not_receipts(
    config: dict[str, Any],
    start_service: StartService,
    portal: Any,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    await start_with_bounces(config, start_service)
    await subscribe(database_url, [(ADDRESS, "Jan", "pl")])
    await db.execute(
        "INSERT INTO suppressions (address_key, reason, expires_at)"
        " VALUES ($1, 'soft_bounce', now() + interval '1 day')",
        key_of(ADDRESS),
    )
    job = issue()
    await portal.publish(json_bytes(job), routing_key="newsletter")
    await until_state(db, job["id"], "done")
    assert await outcomes(db, job["id"]) == {"suppressed": 1}
    later = receipt()
    await publish(portal, later)
    assert (await settled(db, later["id"]))["status"] == "sent"


async def test_raw_reports_are_deleted_after_the_retention(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    (delivery_id,) = await sent_deliveries(db, 1)
    reports = BounceReports(pool)
    old = await reports.store(peer="127.0.0.1", delivery_id=delivery_id, raw=b"old")
    new = await reports.store(peer="127.0.0.1", delivery_id=delivery_id, raw=b"new")
    await db.execute(
        "UPDATE bounce_reports SET received_at = now() - interval '61 days' WHERE id = $1", old
    )
    emptied, _ = await reports.sweep(retention_days=60, keep_soft_days=120)
    assert emptied == 1
    kept = await db.fetch("SELECT id, raw FROM bounce_reports ORDER BY id")
    assert [(r["id"], r["raw"]) for r in kept] == [(old, None), (new, b"new")]


async def test_hostile_words_in_a_report_are_stored_as_clean_text(
    config: dict[str, Any],
    start_service: StartService,
    portal: Any,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    service = await start_with_bounces(config, start_service)
    delivery_id, verp = await sent_receipt(portal, db, smtp_server)
    diagnostic = (
        "smtp; 550 5.1.1 =?utf-8?q?=0D=0ABcc:_evil@example.org?= gone\u2028next \x00 "
        "skrzynka nie istnieje "
    )
    raw = dsn(verp, ADDRESS, diagnostic=diagnostic).replace(
        b"skrzynka nie istnieje", "skrzynka nie istnieje ąę".encode("iso-8859-2") + b"\xff"
    )
    answer = await send_report(port_of(service), verp, raw)
    assert answer.code == 250, answer
    report = await classified(db, stored_id(answer.text))
    assert report["kind"] == "hard"
    row = await delivery(db, delivery_id)
    stored = await db.fetchrow(
        "SELECT reason, diagnostic, outcome, domain FROM bounce_reports WHERE id = $1",
        stored_id(answer.text),
    )
    for text in (row["bounce_diagnostic"], row["detail"], *stored.values()):
        if text is None:
            continue
        assert not any(c in text for c in "\r\n\x00\u2028\u2029"), text
        assert "evil@example.org" not in text
    assert stored["domain"] == "example.pl"


async def test_a_report_that_overtakes_its_deliverys_outcome_waits_for_it(
    pool: asyncpg.Pool, classifiers: ClassifierPool, db: asyncpg.Connection
) -> None:
    """A relay that refuses at once can bounce before mailer has recorded its 250."""
    (delivery_id,) = await sent_deliveries(db, 1)
    await db.execute("UPDATE deliveries SET status = 'sending' WHERE id = $1", delivery_id)
    reports = BounceReports(pool)
    verp = return_path(KEYS, delivery_id, date.today(), BOUNCE_DOMAIN)
    report_id = await reports.store(
        peer="127.0.0.1", delivery_id=delivery_id, raw=dsn(verp, ADDRESS)
    )
    processor = BounceProcessor(
        reports=reports,
        hash_key=HASH_KEY,
        soft=SoftRule(),
        complaint_alert_rate=0.001,
        retention_days=60,
        metrics=Metrics(),
        clock=lambda: datetime.now(UTC),
        classifier=classifiers,
    )
    processor.stored(report_id)
    await asyncio.sleep(0.3)
    assert (
        await db.fetchval("SELECT classified_at FROM bounce_reports WHERE id = $1", report_id)
        is None
    )
    await db.execute("UPDATE deliveries SET status = 'sent' WHERE id = $1", delivery_id)
    report = await classified(db, report_id)
    assert report["kind"] == "hard"
    assert (await delivery(db, delivery_id))["status"] == "bounced"
    await processor.drain()


async def test_one_source_may_hold_only_a_few_connections_open(
    config: dict[str, Any], start_service: StartService
) -> None:
    service = await start_with_bounces(config, start_service)
    opened = [
        await asyncio.open_connection("127.0.0.1", port_of(service))
        for _ in range(CONNECTIONS_PER_SOURCE)
    ]
    for reader, _ in opened:
        assert (await reader.readline()).startswith(b"220 ")
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(service))
    assert (await reader.readline()).startswith(b"421 4.7.0")
    assert await reader.read() == b""  # and closed
    writer.close()
    for _, one in opened[:1]:
        one.close()
        await one.wait_closed()

    async def room_again() -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(service))
        try:
            return (await reader.readline()).startswith(b"220 ")
        finally:
            writer.close()

    await eventually(room_again, timeout=5)
    for _, one in opened[1:]:
        one.close()


async def test_a_feedback_loop_report_to_fbl_is_tied_by_the_return_path_it_quotes(
    config: dict[str, Any],
    start_service: StartService,
    portal: Any,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    """Mailbox providers send complaints to the one address registered with them, not to a
    return path; the message they return still carries its return path."""
    service = await start_with_bounces(config, start_service)
    await subscribe(database_url, [(ADDRESS, "Jan", "pl")])
    job = issue()
    await portal.publish(json_bytes(job), routing_key="newsletter")
    await until_state(db, job["id"], "done")
    (sent,) = smtp_server.to(ADDRESS)
    fbl = f"fbl@{BOUNCE_DOMAIN}"
    forged = "b-" + "a" * 37 + f"@{BOUNCE_DOMAIN}"
    for quoted in (forged, f"someone@{BOUNCE_DOMAIN}"):
        answer = await send_report(port_of(service), fbl, arf(quoted, ADDRESS))
        assert (answer.stage, answer.code) == ("data", 550), answer
    assert await db.fetchval("SELECT count(*) FROM bounce_reports") == 0
    assert await metric(service, "mailer_bounce_reports_refused_total", reason="unmatched") == 2

    answer = await send_report(port_of(service), fbl, arf(sent.mail_from, ADDRESS))
    assert answer.code == 250, answer
    report = await classified(db, stored_id(answer.text))
    assert report["kind"] == "complaint"
    status = await db.fetchval("SELECT status FROM subscriptions")
    assert status == "unsubscribed"


async def test_a_repeated_report_says_the_delivery_had_bounced_already(
    pool: asyncpg.Pool, classifiers: ClassifierPool, db: asyncpg.Connection
) -> None:
    """Two copies of one report, classified together: while the first holds the delivery
    (bouncing it, not yet committed), the second reads it as sent and waits for it. Its
    outcome then says what happened, not "the delivery is sent, not sent"."""
    (delivery_id,) = await sent_deliveries(db, 1)
    reports = BounceReports(pool)
    verp = return_path(KEYS, delivery_id, date.today(), BOUNCE_DOMAIN)
    second = await reports.store(peer="127.0.0.1", delivery_id=delivery_id, raw=dsn(verp, ADDRESS))
    processor = BounceProcessor(
        reports=reports,
        hash_key=HASH_KEY,
        soft=SoftRule(),
        complaint_alert_rate=0.001,
        retention_days=60,
        metrics=Metrics(),
        clock=lambda: datetime.now(UTC),
        classifier=classifiers,
    )
    twin = db.transaction()
    await twin.start()
    await db.execute(
        "UPDATE deliveries SET status = 'bounced', bounce_kind = 'hard' WHERE id = $1", delivery_id
    )
    classifying = asyncio.create_task(processor.classify(second))

    async def waiting_for_the_twin() -> bool:
        waiting: int = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()"
        )
        return waiting > 0

    await eventually(waiting_for_the_twin, timeout=10)
    await twin.commit()
    effect = await classifying
    assert isinstance(effect, Effect) and effect.kind == "hard"
    outcome = await db.fetchval("SELECT outcome FROM bounce_reports WHERE id = $1", second)
    assert outcome == "nothing more: the delivery had bounced already"
    assert await db.fetchval("SELECT count(*) FROM suppressions") == 0  # the twin's to make
