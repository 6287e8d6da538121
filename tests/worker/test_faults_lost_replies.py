"""A lost 250: the relay stored the message, then the connection dropped before its reply.

mailer cannot know it was stored, so it sends again; that is the documented duplicate
window. The copy must keep the Message-ID of the first (so the recipient's client can fold
the two), and nothing may be lost.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from mailer.adapters.broker import Broker
from tests.conftest import StartService
from tests.support.copies import copies, figures
from tests.support.deadlines import reached
from tests.support.jobs import encode, receipt
from tests.support.newsletters import issue, issue_state, outcomes, people, subscribe
from tests.support.smtp import LOST, SmtpServer

ADDRESS = "jan.kowalski@example.pl"


async def test_a_receipt_whose_250_was_lost_is_resent_with_the_same_message_id(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    """Figure: 1 recipient, at most 1 duplicate (the window), 0 lost; both copies carry
    the same Message-ID."""
    smtp_server.data_replies.append(LOST)
    await start_service(config)
    job = receipt()
    await portal.publish(encode(job), routing_key="receipt")

    async def sent() -> bool:
        status: str | None = await db.fetchval(
            "SELECT status FROM deliveries WHERE job_id = $1", UUID(job["id"])
        )
        return status == "sent"

    recorded = await reached(sent, timeout=10)
    got = smtp_server.to(ADDRESS)
    ids = {message.parsed()["Message-ID"] for message in got}
    summary = f"{figures(smtp_server.received, [ADDRESS])}; Message-IDs {ids}"
    assert recorded, summary
    assert 1 <= len(got) <= 2, summary
    assert ids == {f"<{job['id']}@lucid.example>"}, summary


async def test_newsletter_messages_whose_250_was_lost_are_resent_with_the_same_message_id(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    """The first 3 transactions of an issue to 20 lose their 250. Figure: 20 recipients,
    at most 3 duplicates, 0 lost; every duplicate has its first copy's Message-ID."""
    audience = people(20)
    await subscribe(database_url, audience)
    smtp_server.data_replies.extend([LOST] * 3)
    await start_service(config)
    job = issue()
    await portal.publish(encode(job), routing_key="newsletter")

    async def done() -> bool:
        return await issue_state(db, job["id"]) == "done"

    finished = await reached(done, timeout=15)
    wanted = [email for email, _, _ in audience]
    counts = copies(smtp_server.received)
    summary = (
        f"{figures(smtp_server.received, wanted)}; done {finished};"
        f" ledger {await outcomes(db, job['id'])}"
    )
    assert finished and await outcomes(db, job["id"]) == {"sent": 20}, summary
    assert all(counts[email] >= 1 for email in wanted), summary
    assert sum(count - 1 for count in counts.values()) <= 3, summary
    for email in wanted:
        assert len({m.parsed()["Message-ID"] for m in smtp_server.to(email)}) == 1, email
