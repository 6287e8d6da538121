"""A relay that refuses our sender is our problem, never the recipients'.

`553 5.1.8 Sender address rejected` answers MAIL FROM when the return path is misconfigured.
Its enhanced code is 5.1.x, but it is about the sender: nobody may be recorded failed or
suppressed for it. The deliveries wait and are retried; once the relay takes our sender
again, everyone gets their message, once.
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
from tests.support.smtp import SmtpServer

REFUSED = "553 5.1.8 Sender address rejected: Domain not found"


async def statuses(db: asyncpg.Connection) -> dict[str, int]:
    rows = await db.fetch("SELECT status, count(*) AS n FROM deliveries GROUP BY status")
    return {row["status"]: row["n"] for row in rows}


async def tried_again(smtp_server: SmtpServer, sessions: int) -> bool:
    """Wait until the relay saw `sessions` MAIL FROM; False when it stopped short of it."""

    async def enough() -> bool:
        return smtp_server.mail_from_seen >= sessions

    return await reached(enough, timeout=6)


async def test_receipts_are_held_not_failed_while_the_relay_refuses_our_sender(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    """The relay refuses our sender (MAIL FROM) for a while: the 3 receipts are retried
    meanwhile, 0 recorded failed, 0 addresses suppressed (the refusal is never the
    recipient's fault), and 3 delivered once each when the relay takes our sender again."""
    smtp_server.mail_reply = REFUSED
    await start_service(config)
    addresses = [f"klient{n}@example.pl" for n in range(3)]
    jobs = [receipt(to={"email": address}) for address in addresses]
    for job in jobs:
        await portal.publish(encode(job), routing_key="receipt")
    retried = await tried_again(smtp_server, 2 * len(jobs))
    during = await statuses(db)
    suppressed = await db.fetchval("SELECT count(*) FROM suppressions")

    smtp_server.mail_reply = None  # the return path is fixed

    async def all_sent() -> bool:
        return (await statuses(db)).get("sent") == len(jobs)

    await reached(all_sent, timeout=10)
    summary = (
        f"while refused: retried {retried}, ledger {during}, {suppressed} suppressed;"
        f" once taken again: {figures(smtp_server.received, addresses)},"
        f" ledger {await statuses(db)}"
    )
    assert "failed" not in during, summary
    assert suppressed == 0, summary
    assert retried, summary
    assert copies(smtp_server.received) == {address: 1 for address in addresses}, summary
    assert await db.fetchval("SELECT count(*) FROM suppressions") == 0, summary


async def test_a_newsletter_is_held_not_failed_while_the_relay_refuses_our_sender(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    """The relay refuses our sender for a while: of 20 subscribers, 0 failed and 0
    suppressed while refused (the issue is not 'done' with nothing delivered); 20 delivered
    once each and the issue done once the relay takes our sender again."""
    audience = people(20)
    await subscribe(database_url, audience)
    smtp_server.mail_reply = REFUSED
    await start_service(config)
    job = issue()
    await portal.publish(encode(job), routing_key="newsletter")
    retried = await tried_again(smtp_server, 2 * len(audience))
    during = await outcomes(db, job["id"])
    suppressed = await db.fetchval("SELECT count(*) FROM suppressions")

    smtp_server.mail_reply = None

    async def done() -> bool:
        return await issue_state(db, job["id"]) == "done"

    await reached(done, timeout=15)
    wanted = [email for email, _, _ in audience]
    summary = (
        f"while refused: retried {retried}, ledger {during}, {suppressed} suppressed;"
        f" once taken again: {figures(smtp_server.received, wanted)},"
        f" ledger {await outcomes(db, job['id'])}"
    )
    assert "failed" not in during, summary
    assert suppressed == 0, summary
    assert copies(smtp_server.received) == {email: 1 for email in wanted}, summary
    assert await outcomes(db, job["id"]) == {"sent": len(wanted)}, summary
    assert (
        await db.fetchval(
            "SELECT count(*) FROM deliveries WHERE job_id = $1 AND status = 'failed'",
            UUID(job["id"]),
        )
        == 0
    )
