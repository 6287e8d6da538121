"""Receipts end to end: the portal publishes, the relay receives, the ledger records."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any
from uuid import UUID

import asyncpg
import dkim

from mailer.adapters.broker import Broker
from mailer.adapters.topology import DEAD_QUEUE
from mailer.core.addresses import address_key
from mailer.core.tokens import derive_key
from tests.conftest import SECRET, DkimKeys, StartService
from tests.support.dead_letters import parked
from tests.support.http import metric
from tests.support.jobs import PDF, encode, receipt
from tests.support.outage import database_away
from tests.support.smtp import DROP, SmtpServer
from tests.support.waiting import eventually

ADDRESS = "jan.kowalski@example.pl"


async def publish(portal: Broker, job: dict[str, Any] | bytes) -> None:
    body = job if isinstance(job, bytes) else encode(job)
    await portal.publish(body, routing_key="receipt")


async def row(db: asyncpg.Connection, job_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT status, attempts, reply, message_id, detail FROM deliveries WHERE job_id = $1",
        UUID(job_id),
    )


async def settled(db: asyncpg.Connection, job_id: str, timeout: float = 15) -> asyncpg.Record:
    async def probe() -> asyncpg.Record | None:
        found = await row(db, job_id)
        return (
            found if found and found["status"] not in ("pending", "sending", "retrying") else None
        )

    return await eventually(probe, timeout=timeout)


def key_of(address: str) -> bytes:
    return address_key(derive_key(SECRET.encode(), "address"), address)


async def test_a_receipt_arrives_signed_and_is_recorded(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    dkim_keys: DkimKeys,
) -> None:
    await start_service(config)
    job = receipt()
    await publish(portal, job)
    outcome = await settled(db, job["id"])

    (received,) = smtp_server.received
    assert received.mail_from == "no-reply@lucid.example"
    assert received.rcpt_tos == (ADDRESS,)
    verifier = dkim.DKIM(received.data)
    assert verifier.verify(idx=0, dnsfunc=dkim_keys.dns)
    assert verifier.verify(idx=1, dnsfunc=dkim_keys.dns)
    message = received.parsed()
    assert message["From"] == "LucidOffice <no-reply@lucid.example>"
    assert message["To"] == f"Jan Kowalski <{ADDRESS}>"
    assert message["Subject"] == "Potwierdzenie zamówienia ZAM/2026/11/0042"
    assert message["Message-ID"] == f"<{job['id']}@lucid.example>"
    text = message.get_body(("plain",))
    assert text is not None and "Razem do zapłaty: 1\xa0476,00\xa0zł" in text.get_content()
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_filename() == "FV-2026-11-0042.pdf"
    assert attachment.get_content() == PDF

    assert outcome["status"] == "sent"
    assert outcome["attempts"] == 1
    assert outcome["reply"] == "250 2.0.0 Ok: queued as Q1"
    assert outcome["message_id"] == f"<{job['id']}@lucid.example>"


async def test_the_database_never_holds_the_address(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    smtp_server.rcpt_replies[ADDRESS] = f"550 5.1.1 <{ADDRESS}>: Recipient address rejected"
    await start_service(config)
    job = receipt()
    await publish(portal, job)
    await settled(db, job["id"])
    dump = json.dumps(
        [
            dict(r)
            for r in await db.fetch(
                "SELECT d.*, s.* FROM deliveries d LEFT JOIN suppressions s ON true"
            )
        ],
        default=str,
    )
    assert "kowalski" not in dump.lower()


async def test_the_same_job_published_twice_is_sent_once(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    service = await start_service(config)
    job = receipt()
    await asyncio.gather(publish(portal, job), publish(portal, job))
    await settled(db, job["id"])
    await publish(portal, job)

    async def duplicates_seen() -> bool:
        return await metric(service, "mailer_jobs_duplicate_total", kind="receipt") >= 2

    await eventually(duplicates_seen)
    assert len(smtp_server.received) == 1
    assert await db.fetchval("SELECT count(*) FROM deliveries") == 1


async def test_the_same_id_with_another_payload_is_parked_as_a_conflict(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    await start_service(config)
    job = receipt()
    await publish(portal, job)
    await settled(db, job["id"])
    changed = encode({**job, "data": {**job["data"], "total": "9999.00"}})
    await publish(portal, changed)
    (message,) = await parked(db, 1)
    assert message.body == changed
    assert message.reason == f"id: {job['id']} was already used for a different payload"
    assert len(smtp_server.received) == 1


BAD_JOBS: list[tuple[bytes, str]] = [
    (b"this is not json", "body is not JSON"),
    (encode({"kind": "invoice", "version": 1}), "kind: unknown kind 'invoice'"),
    (encode(receipt(version=7)), "version: receipt jobs of version 7 are not supported"),
    (encode(receipt(to={"email": "jan.kowalski@@example.pl"})), "to.email: not a valid e-mail"),
    (
        encode(receipt(to={"email": ADDRESS, "name": "Jan\r\nBcc: all@example.pl"})),
        "to.name: contains a line break or control character",
    ),
    (
        encode(
            receipt(
                attachments=[
                    {"filename": "a.pdf", "content_type": "application/pdf", "data_base64": "***"}
                ]
            )
        ),
        "attachments.0.data_base64: is not valid base64",
    ),
    (encode(receipt(template="no-such-template")), "template: unknown template 'no-such-template'"),
    (encode(receipt(data={"order_number": "1"})), "template receipt/pl: 'placed_at' is undefined"),
    (
        encode(receipt(data={**receipt()["data"], "total": 1476.0})),
        "must be a decimal string, not a JSON number",
    ),
    (
        encode(
            {
                "kind": "newsletter",
                "version": 1,
                "id": "0e9b7d8c-1c55-4f0a-b7b5-0d6f3a2b9c11",
                "list": "lucid-news",
                "subject": "x",
            }
        ),
        "kind: a newsletter job does not belong on the receipts queue",
    ),
]


async def test_invalid_jobs_are_parked_with_the_reason_and_the_worker_goes_on(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    await start_service(config)
    for body, _ in BAD_JOBS:
        await publish(portal, body)
    good = receipt()
    await publish(portal, good)
    assert (await settled(db, good["id"]))["status"] == "sent"

    messages = await parked(db, len(BAD_JOBS))
    by_body = {m.body: m for m in messages}
    for body, expected in BAD_JOBS:
        message = by_body[body]  # byte-identical
        reason = message.reason
        assert expected in reason, (expected, reason)
        assert message.origin == "mailer.receipts"
        assert "kowalski" not in reason
    assert [r.rcpt_tos for r in smtp_server.received] == [(ADDRESS,)]


async def test_a_4xx_reply_is_retried_until_it_is_sent(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    smtp_server.data_replies.extend(["451 4.3.0 Try again later", "452 4.3.1 Full"])
    await start_service(config)
    job = receipt()
    await publish(portal, job)
    outcome = await settled(db, job["id"])
    assert outcome["status"] == "sent"
    assert outcome["attempts"] == 3
    assert len(smtp_server.received) == 1


async def test_a_connection_dropped_after_data_is_retried(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    smtp_server.data_replies.append(DROP)
    await start_service(config)
    job = receipt()
    await publish(portal, job)
    outcome = await settled(db, job["id"])
    assert (outcome["status"], outcome["attempts"]) == ("sent", 2)
    assert len(smtp_server.received) == 1


async def test_an_unknown_recipient_fails_and_is_suppressed_from_then_on(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    smtp_server.rcpt_replies[ADDRESS] = (
        f"550 5.1.1 <{ADDRESS}>: Recipient address rejected: User unknown"
    )
    await start_service(config)
    first = receipt()
    await publish(portal, first)
    outcome = await settled(db, first["id"])
    assert outcome["status"] == "failed"
    assert outcome["reply"] == ("550 5.1.1 <recipient>: Recipient address rejected: User unknown")
    assert (
        await db.fetchval("SELECT reason FROM suppressions WHERE address_key = $1", key_of(ADDRESS))
        == "hard_bounce"
    )

    connections = smtp_server.connections
    second = receipt()
    await publish(portal, second)
    later = await settled(db, second["id"])
    assert (later["status"], later["detail"], later["attempts"]) == ("suppressed", "hard_bounce", 0)
    assert smtp_server.received == []
    assert smtp_server.connections == connections


async def test_a_policy_rejection_fails_without_suppressing(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    smtp_server.data_replies.append("554 5.7.1 Message rejected by policy")
    await start_service(config)
    job = receipt()
    await publish(portal, job)
    outcome = await settled(db, job["id"])
    assert (outcome["status"], outcome["reply"]) == (
        "failed",
        "554 5.7.1 Message rejected by policy",
    )
    assert await db.fetchval("SELECT count(*) FROM suppressions") == 0


async def test_a_complained_address_gets_no_receipt(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    await db.execute(
        "INSERT INTO suppressions (address_key, reason) VALUES ($1, 'complaint')",
        key_of(ADDRESS.upper()),
    )
    await start_service(config)
    job = receipt()
    await publish(portal, job)
    outcome = await settled(db, job["id"])
    assert (outcome["status"], outcome["detail"]) == ("suppressed", "complaint")
    assert smtp_server.received == []


async def test_a_failure_that_stays_temporary_is_final_after_the_retry_period(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    smtp_server.data_replies.extend(["451 4.4.1 Host unreachable"] * 50)
    config["retry"]["give_up_after"] = 1
    await start_service(config)
    job = receipt()
    await publish(portal, job)
    outcome = await settled(db, job["id"])
    assert outcome["status"] == "failed"
    assert outcome["reply"] == "451 4.4.1 Host unreachable"
    assert outcome["detail"].startswith("gave up")
    assert outcome["attempts"] >= 2


async def test_a_database_outage_neither_loses_nor_parks_a_receipt(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    database_url: str,
) -> None:
    await start_service(config)
    async with database_away(database_url):
        await publish(portal, receipt())
        await asyncio.sleep(1.5)  # several delivery attempts while the database is away
        assert smtp_server.received == []

    async def delivered() -> bool:
        return len(smtp_server.received) == 1

    await eventually(delivered)
    channel = await portal.open_channel()
    dead = await channel.get_queue(DEAD_QUEUE, ensure=False)
    assert await dead.get(fail=False) is None


async def test_receipts_respect_the_locale_and_the_default(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    await start_service(config)
    english = receipt(locale="en")
    unspecified = receipt(to={"email": "anna@example.pl"})
    del unspecified["locale"]
    for job in (english, unspecified):
        await publish(portal, job)
        await settled(db, job["id"])
    subjects = {r.rcpt_tos[0]: r.parsed()["Subject"] for r in smtp_server.received}
    assert subjects == {
        ADDRESS: "Order confirmation ZAM/2026/11/0042",
        "anna@example.pl": "Potwierdzenie zamówienia ZAM/2026/11/0042",
    }


async def test_an_attachment_over_the_limit_is_parked(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    db: asyncpg.Connection,
) -> None:
    config["worker"]["max_attachment_bytes"] = 1000
    await start_service(config)
    big = receipt(
        attachments=[
            {
                "filename": "big.pdf",
                "content_type": "application/pdf",
                "data_base64": base64.b64encode(b"x" * 1001).decode(),
            }
        ]
    )
    await publish(portal, big)
    (message,) = await parked(db, 1)
    assert message.reason == "attachments: 1001 bytes, more than the limit of 1000"
