"""Hostile input end to end: what an attacker who fills in a form or a portal field gets out.

Each test publishes through the real RabbitMQ to a running Service and looks at the bytes the
relay received: which header lines there are, how many RCPTs, what a mail client shows. An
encoded-word in input must arrive as text (encoded again by us), never as header lines.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections import Counter
from email.parser import BytesParser
from email.policy import default
from typing import Any

import asyncpg
import dkim
import pytest

from mailer.adapters.broker import Broker
from mailer.adapters.topology import FAILURES_HEADER
from tests.conftest import DkimKeys, StartService
from tests.support.dead_letters import parked
from tests.support.jobs import encode, receipt
from tests.support.newsletters import issue, until_state
from tests.support.payloads import (
    BCC_Q,
    HOSTILE,
    LITERAL_BREAKS,
    LOOKALIKES,
    NAUGHTY,
    PHISHING_Q,
    filename_of,
    shown_name,
)
from tests.support.smtp import Received, SmtpServer
from tests.support.waiting import eventually

ADDRESS = "jan.kowalski@example.pl"
# Filenames may not hold a slash; these reach the Content-Disposition parameter.
FILENAMES = [
    BCC_Q,
    "=?utf-8?q?=0D=0AContent-Type:_text=2Fhtml=0D=0A=0D=0Ax?=.pdf",
    "=?utf-8?b?" + base64.b64encode(b"\r\nBcc: victim@attacker.example\r\n").decode() + "?=",
    'a"; filename="evil.exe',
]
NAMES = [*HOSTILE, LOOKALIKES[0], "Łucja Żółć-Brzęczyszczykiewicz"]

RECEIPT_HEADERS = Counter(
    {"DKIM-Signature": 2, "From": 1, "To": 1, "Subject": 1, "Date": 1, "Message-ID": 1}
    | {"MIME-Version": 1, "Content-Type": 1}
)
NEWSLETTER_HEADERS = RECEIPT_HEADERS + Counter(
    {"List-Id": 1, "List-Unsubscribe": 1, "List-Unsubscribe-Post": 1, "Feedback-ID": 1}
)


def header_names(received: Received) -> Counter[str]:
    head = received.data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return Counter(line.split(":", 1)[0] for line in head.split("\r\n") if line[:1] not in " \t")


def _raw_header(received: Received, name: str) -> str:
    head = received.data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    (found,) = re.findall(rf"^{name}:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*", head, flags=re.MULTILINE)
    return str(found)


def shown(received: Received) -> Any:
    """The message as a mail client decodes it."""
    return BytesParser(policy=default).parsebytes(received.data)


def assert_clean(received: Received, expected: Counter[str], dkim_keys: DkimKeys) -> None:
    assert header_names(received) == expected, "an input added or removed a header line"
    assert b"\n" not in received.data.replace(b"\r\n", b"")
    assert b"\r" not in received.data.replace(b"\r\n", b"")
    assert all(byte < 128 for byte in received.data)
    assert max(len(line) for line in received.data.split(b"\r\n")) <= 998
    verifier = dkim.DKIM(received.data)
    assert verifier.verify(idx=0, dnsfunc=dkim_keys.dns)
    assert verifier.verify(idx=1, dnsfunc=dkim_keys.dns)
    types = [part.get_content_type() for part in shown(received).walk()]
    assert "text/html" not in types[:1] and types.count("text/html") == 1, types


@pytest.mark.parametrize("name", NAMES)
async def test_a_receipt_shows_a_hostile_name_and_filename_as_text(
    name: str,
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    dkim_keys: DkimKeys,
) -> None:
    await start_service(config)
    attachments = [
        {"filename": filename, "content_type": "application/pdf", "data_base64": "JVBERi0K"}
        for filename in FILENAMES
    ]
    job = receipt(to={"email": ADDRESS, "name": name}, attachments=attachments)
    await portal.publish(encode(job), routing_key="receipt")
    await eventually(lambda: _received(smtp_server, 1))

    (received,) = smtp_server.received
    assert received.rcpt_tos == (ADDRESS,), "one RCPT, the job's recipient"
    assert_clean(received, RECEIPT_HEADERS, dkim_keys)
    message = shown(received)
    assert shown_name(_raw_header(received, "To")) == (name, ADDRESS)
    assert message["To"].addresses[0].display_name.replace(" ", "") == name.replace(" ", "")
    assert message["Subject"] == "Potwierdzenie zamówienia ZAM/2026/11/0042"
    assert [filename_of(a) for a in message.iter_attachments()] == FILENAMES
    assert [a.get_content_type() for a in message.iter_attachments()] == ["application/pdf"] * 4


async def test_a_confirmation_mail_to_a_typed_in_address_shows_the_name_as_text(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    dkim_keys: DkimKeys,
) -> None:
    """`confirmed: false` mails whoever was typed in: the phishing form of the issue."""
    await start_service(config)
    for name in (PHISHING_Q, BCC_Q):
        job = {
            "kind": "subscription",
            "version": 1,
            "id": str(uuid.uuid4()),
            "action": "subscribe",
            "list": "lucid-news",
            "email": f"{uuid.uuid4().hex[:8]}@example.pl",
            "name": name,
            "locale": "pl",
            "confirmed": False,
        }
        await portal.publish(encode(job), routing_key="subscription")
    await eventually(lambda: _received(smtp_server, 2))
    names = set()
    for received in smtp_server.received:
        assert len(received.rcpt_tos) == 1
        assert_clean(received, RECEIPT_HEADERS, dkim_keys)
        message = shown(received)
        assert message["Subject"] == "Potwierdź zapis na listę Lucid News"
        names.add(shown_name(_raw_header(received, "To"))[0])
    assert names == {PHISHING_Q, BCC_Q}


async def test_a_newsletter_shows_hostile_subject_name_and_list_name_as_text(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    dkim_keys: DkimKeys,
) -> None:
    config["lists"]["lucid-news"]["name"] = BCC_Q
    await start_service(config)
    people = {f"p{n}@example.pl": name for n, name in enumerate(NAMES)}
    jobs: list[dict[str, Any]] = [
        {
            "kind": "subscription",
            "version": 1,
            "id": str(uuid.uuid4()),
            "action": "subscribe",
            "list": "lucid-news",
            "email": email,
            "name": name,
            "confirmed": True,
        }
        for email, name in people.items()
    ]
    for job in jobs:
        await portal.publish(encode(job), routing_key="subscription")

    async def applied() -> bool:
        ids = [uuid.UUID(job["id"]) for job in jobs]
        return bool(
            await db.fetchval("SELECT count(*) = $2 FROM jobs WHERE id = ANY($1)", ids, len(ids))
        )

    await eventually(applied)
    newsletter = issue(subject=PHISHING_Q)
    await portal.publish(encode(newsletter), routing_key="newsletter")
    await until_state(db, newsletter["id"], "done")

    assert sorted(r.rcpt_tos for r in smtp_server.received) == sorted((e,) for e in people)
    for received in smtp_server.received:
        assert_clean(received, NEWSLETTER_HEADERS, dkim_keys)
        message = shown(received)
        assert message["Subject"] == PHISHING_Q
        assert shown_name(_raw_header(received, "To")) == (
            people[received.rcpt_tos[0]],
            received.rcpt_tos[0],
        )
        assert message["List-Id"] == f"{BCC_Q} <lucid-news.lucid.example>"
        assert message["From"] == "Lucid News <news@lucid.example>"


async def test_a_naughty_string_corpus_in_names_and_file_names(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    dkim_keys: DkimKeys,
) -> None:
    """Every string in a receipt's name and file name, and in a subscriber's stored name:
    the relay gets one RCPT and the same header lines, the client shows the string, the
    database holds it unchanged."""
    await start_service(config)
    sent = {}
    for n, naughty in enumerate(NAUGHTY):
        address = f"n{n}@example.pl"
        filename = naughty.replace("/", "-").replace("\\", "-")
        pdf = {"filename": filename, "content_type": "application/pdf", "data_base64": ""}
        job = receipt(to={"email": address, "name": naughty}, attachments=[pdf])
        await portal.publish(encode(job), routing_key="receipt")
        change = {
            "kind": "subscription",
            "version": 1,
            "id": str(uuid.uuid4()),
            "action": "subscribe",
            "list": "lucid-news",
            "email": address,
            "name": naughty,
            "confirmed": True,
        }
        await portal.publish(encode(change), routing_key="subscription")
        sent[address] = (naughty, filename)
    await eventually(lambda: _received(smtp_server, len(NAUGHTY)))

    async def stored() -> bool:
        return bool(await db.fetchval("SELECT count(*) = $1 FROM subscribers", len(NAUGHTY)))

    await eventually(stored)
    for received in smtp_server.received:
        (address,) = received.rcpt_tos
        naughty, filename = sent[address]
        assert_clean(received, RECEIPT_HEADERS, dkim_keys)
        assert shown_name(_raw_header(received, "To")) == (naughty, address)
        assert [filename_of(a) for a in shown(received).iter_attachments()] == [filename]
    rows = await db.fetch("SELECT email, name FROM subscribers")
    assert {row["email"]: row["name"] for row in rows} == {a: v[0] for a, v in sent.items()}


async def test_literal_line_breaks_in_header_fields_are_parked_naming_the_field(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    await start_service(config)
    bodies = []
    for evil in LITERAL_BREAKS:
        pdf = {"filename": evil, "content_type": "application/pdf", "data_base64": ""}
        bodies += [
            (encode(receipt(to={"email": ADDRESS, "name": evil})), "to.name: contains a line"),
            (encode(receipt(attachments=[pdf])), "attachments.0.filename: contains a line"),
        ]
    for body, _ in bodies:
        await portal.publish(body, routing_key="receipt")
    newsletter = encode(issue(subject={"pl": LITERAL_BREAKS[0], "en": "x"}))
    await portal.publish(newsletter, routing_key="newsletter")
    bodies.append((newsletter, "subject: contains a line break or control character"))
    found = {m.body: m.reason for m in await parked(db, len(bodies))}
    for body, reason in bodies:
        assert found[body].startswith(reason), found[body]
    assert smtp_server.received == []


def _nested(depth: int) -> bytes:
    job = receipt()
    job["data"]["notes"] = "@"
    return encode(job).replace(b'"@"', b"[" * depth + b"]" * depth)


def _with(old: bytes, new: bytes) -> bytes:
    body = encode(receipt())
    assert old in body
    return body.replace(old, new)


HOSTILE_JSON: list[tuple[bytes, str]] = [
    (_nested(100_000), "body: nested deeper than 32 levels"),
    (_nested(40), "body: nested deeper than 32 levels"),
    (
        _with(b'"total": "1476.00"', b'"total": 1e100000'),
        "body: the number 1e100000 is out of range",
    ),
    (_with(b'"total": "1476.00"', b'"total": NaN'), "body is not JSON (NaN is not valid JSON)"),
    (_with(b'"total": "1476.00"', b'"total": -Infinity'), "body is not JSON (-Infinity is not"),
    (
        _with(b'"total": "1476.00"', b'"total": 1476.0'),
        "data.total: 1476.0 must be a decimal string",
    ),
    (
        _with(b'"total": "1476.00"', b'"total": "1e100000"'),
        "data.total: '1e100000' is not an amount",
    ),
    (
        _with(b'"unit_price": "1200.00"', b'"unit_price": "NaN"'),
        "data.items.0.unit_price: 'NaN' is not",
    ),
    (_with(b'"quantity": 1', b'"quantity": 1' + b"0" * 5000), "body: the number 1000"),
    (_with(b'"quantity": 1', b'"quantity": "1e100000"'), "data.items.0.quantity: '1e100000'"),
]


async def test_hostile_json_is_parked_at_once_and_the_worker_goes_on(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    """Each is parked on its first delivery (reason says why, no failure count); a good job
    published after them is still sent."""
    config["worker"]["max_attachment_bytes"] = 30_000
    await start_service(config)
    oversized = encode(receipt(data={**receipt()["data"], "pad": "x" * 2_000_000}))
    bodies = [*HOSTILE_JSON, (oversized, "body: 2000")]
    for body, _ in bodies:
        await portal.publish(body, routing_key="receipt")
    good = receipt()
    await portal.publish(encode(good), routing_key="receipt")
    found = {m.body: m for m in await parked(db, len(bodies))}
    for body, reason in bodies:
        message = found[body]
        assert message.reason.startswith(reason), (reason, message.reason)
        assert FAILURES_HEADER not in message.headers, "parked after retries"
    await eventually(lambda: _received(smtp_server, 1))
    assert [r.rcpt_tos for r in smtp_server.received] == [(ADDRESS,)]


async def _received(smtp_server: SmtpServer, count: int) -> bool:
    return len(smtp_server.received) >= count
