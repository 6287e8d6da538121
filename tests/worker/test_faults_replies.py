"""Relay replies that are not UTF-8, or carry a NUL byte, must not freeze the ledger.

aiosmtplib hands such a reply on with surrogate escapes (or the NUL as it is); PostgreSQL
refuses both in a text column. The outcome must still be recorded, with the reply text
sanitized, once, and other deliveries must go on.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
import pytest

from mailer.adapters.broker import Broker
from mailer.service import Service
from tests.conftest import StartService
from tests.support.copies import copies, figures
from tests.support.deadlines import reached
from tests.support.jobs import encode, receipt
from tests.support.newsletters import issue, issue_state, outcomes, people, subscribe
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

ADDRESS = "jan.kowalski@example.pl"
OTHER = "anna.nowak@example.com"  # another domain: DATA replies are set per domain
# ISO-8859-2 "550 Użytkownik nie istnieje": ż is 0xBF there, and not UTF-8 on its own.
LATIN2 = "550 Użytkownik nie istnieje".encode("iso-8859-2")
NUL = b"554 5.7.1 Rejected\x00by policy"
REPLIES = [
    pytest.param("rcpt", LATIN2, "ytkownik nie istnieje", id="iso-8859-2-at-rcpt"),
    pytest.param("data", NUL, "by policy", id="nul-at-data"),
]


def refuse(smtp_server: SmtpServer, where: str, reply: bytes, address: str) -> None:
    """Every RCPT for the address, or every DATA for its domain, gets the reply."""
    if where == "rcpt":
        smtp_server.rcpt_replies[address] = reply
    else:
        smtp_server.domain_replies[address.rpartition("@")[2]] = reply


def stored_sanitized(text: str | None, expected: str) -> bool:
    return text is not None and expected in text and "\x00" not in text


async def final_row(db: asyncpg.Connection, job_id: str, timeout: float) -> asyncpg.Record | None:
    """The receipt's row once it is final, or its last state when the time is up."""

    async def probe() -> asyncpg.Record | None:
        row = await db.fetchrow(
            "SELECT status, attempts, reply, detail FROM deliveries WHERE job_id = $1",
            UUID(job_id),
        )
        return row if row is not None and row["status"] in ("sent", "failed") else None

    try:
        return await eventually(probe, timeout=timeout)
    except AssertionError:
        return await db.fetchrow(
            "SELECT status, attempts, reply, detail FROM deliveries WHERE job_id = $1",
            UUID(job_id),
        )


@pytest.mark.parametrize(("where", "reply", "expected"), REPLIES)
async def test_a_receipt_refused_with_a_reply_that_is_not_utf8_is_recorded_failed(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    where: str,
    reply: bytes,
    expected: str,
) -> None:
    """A refusal that is not UTF-8: the receipt is 'failed' within seconds (its outcome
    recorded, not left 'sending' with its queue message looping round the delay queue), the
    reply stored sanitized, the relay asked once, and the next receipt sent."""
    refuse(smtp_server, where, reply, ADDRESS)
    await start_service(config)
    first = receipt()
    second = receipt(to={"email": OTHER, "name": "Anna Nowak"})
    await portal.publish(encode(first), routing_key="receipt")
    await portal.publish(encode(second), routing_key="receipt")
    row = await final_row(db, first["id"], timeout=8)
    other = await final_row(db, second["id"], timeout=8)

    assert row is not None and row["status"] == "failed", (
        f"the refused receipt is {row and row['status']!r} after 8 s, not 'failed':"
        " its outcome was never recorded"
    )
    assert stored_sanitized(row["reply"], expected), row["reply"]
    assert row["attempts"] == 1
    assert other is not None and other["status"] == "sent", "a bad reply blocked the next one"
    assert copies(smtp_server.received) == {OTHER: 1}


@pytest.mark.parametrize(("where", "reply", "expected"), REPLIES)
async def test_a_newsletter_reply_that_is_not_utf8_neither_blocks_the_chunk_nor_resends_it(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
    where: str,
    reply: bytes,
    expected: str,
) -> None:
    """One recipient of 20 gets the bad reply: the chunk's outcomes are written and the
    issue is done at once, 19 sent + 1 failed with the reply sanitized, and 0 duplicates,
    with or without a restart (the whole chunk is not sent again)."""
    victim = "jan@latin2.example"
    audience = [*people(19), (victim, "Jan", "pl")]
    await subscribe(database_url, audience)
    refuse(smtp_server, where, reply, victim)
    config["newsletter"] = {"chunk_size": 50}
    first: Service = await start_service(config)
    job = issue()
    await portal.publish(encode(job), routing_key="newsletter")

    async def done() -> bool:
        return await issue_state(db, job["id"]) == "done"

    with_no_restart = await reached(done, timeout=8)
    at_first = await outcomes(db, job["id"])
    await first.stop()
    await start_service(config)  # a restart, as after a deploy
    await reached(done, timeout=8)
    wanted = [email for email, _, _ in audience if email != victim]
    counts = copies(smtp_server.received)
    summary = (
        f"{figures(smtp_server.received, wanted)}; done without a restart: {with_no_restart};"
        f" outcomes before the restart {at_first}, after {await outcomes(db, job['id'])}"
    )
    assert with_no_restart, summary
    assert all(counts[email] == 1 for email in wanted), summary
    assert counts[victim] == 0, summary
    assert await outcomes(db, job["id"]) == {"sent": 19, "failed": 1}, summary
    failed = await db.fetchval(
        "SELECT reply FROM deliveries WHERE job_id = $1 AND status = 'failed'", UUID(job["id"])
    )
    assert stored_sanitized(failed, expected), failed
