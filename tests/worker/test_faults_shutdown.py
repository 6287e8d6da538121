"""SIGTERM past drain_timeout: what the relay accepted stays recorded as sent.

The relay takes 10 messages of a chunk of 30, then holds its replies. The worker is
stopped (what SIGTERM does) with a 1 s drain_timeout, so the sends in flight are cancelled;
a second worker then finishes the issue.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from mailer.adapters.broker import Broker
from tests.conftest import StartService
from tests.support.copies import copies, figures
from tests.support.deadlines import reached
from tests.support.jobs import encode
from tests.support.newsletters import issue, issue_state, outcomes, people, subscribe
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

ACCEPTED = 10


async def test_a_stop_past_the_drain_timeout_keeps_what_the_relay_accepted(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    """A stop past the drain timeout while the relay holds a chunk of 30 with 10 accepted:
    the chunk's known outcomes are kept, not handed back as unattempted, so the 10 accepted
    are 'sent' in the ledger when the first worker has stopped, and after a second worker
    finishes the issue nobody has two copies."""
    audience = people(30)
    await subscribe(database_url, audience)
    smtp_server.hold_after = ACCEPTED
    config["newsletter"] = {"chunk_size": 30, "pool_size": 2}
    config["worker"]["drain_timeout"] = 1
    first = await start_service(config)
    job = issue()
    await portal.publish(encode(job), routing_key="newsletter")

    async def stalled() -> bool:
        return len(smtp_server.received) >= ACCEPTED and sum(smtp_server.in_flight.values()) > 0

    await eventually(stalled)
    await first.stop()
    after_stop = await outcomes(db, job["id"])
    smtp_server.drop_connections()  # the held transactions end unanswered, not stored
    smtp_server.hold_after = None
    smtp_server.release.set()
    await start_service(config)

    async def done() -> bool:
        return await issue_state(db, job["id"]) == "done"

    finished = await reached(done, timeout=20)
    wanted = [email for email, _, _ in audience]
    summary = (
        f"{figures(smtp_server.received, wanted)}; ledger when the first worker stopped"
        f" {after_stop}, at the end {await outcomes(db, job['id'])}; done: {finished}"
    )
    assert after_stop.get("sent") == ACCEPTED, summary
    assert copies(smtp_server.received) == {email: 1 for email in wanted}, summary
    assert finished, summary
