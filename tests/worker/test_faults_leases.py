"""Leases across workers: a worker that cannot reach the database, or whose heartbeat hit
an error, must not let another worker retake and resend what it is still sending.

Worker A logs in with a role of its own (tests/support/roles.py), so that A alone can be
cut off or lose a privilege; worker B goes on as usual. The lease is 3 s in tests.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import asyncpg

from mailer.adapters.broker import Broker
from mailer.service import Service
from tests.conftest import StartService
from tests.support.copies import copies, figures
from tests.support.deadlines import reached
from tests.support.jobs import encode
from tests.support.newsletters import issue, issue_state, outcomes, people, subscribe
from tests.support.readiness import check, readiness
from tests.support.roles import worker_role
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

RECORD_WINDOW = 64  # the README's bound: attempts per chunk sent but not yet recorded


def as_role(config: dict[str, Any], url: str) -> dict[str, Any]:
    own = copy.deepcopy(config)
    own["database"]["url"] = url
    return own


async def sending(smtp_server: SmtpServer, count: int) -> None:
    async def probe() -> bool:
        return len(smtp_server.received) >= count

    await eventually(probe)


async def test_the_heartbeat_survives_a_database_error_that_is_not_temporary(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    """A's UPDATE on deliveries is revoked for 2 s while A sends a 9 s chunk: the lease
    renewal fails with 42501 (insufficient privilege), an error not classed as temporary;
    nothing else of A writes meanwhile. The heartbeat lives on: it is not ok on /readyz
    while renewals fail and ok again after, A's leases do not lapse for B to retake and
    resend, and the 30 recipients get 0 duplicates, 0 lost."""
    audience = people(30)
    await subscribe(database_url, audience)
    smtp_server.data_delay = 0.3
    config["newsletter"] = {"chunk_size": 30, "pool_size": 1}
    async with worker_role(database_url) as role:
        worker_a: Service = await start_service(as_role(config, role.url))
        job = issue()
        await portal.publish(encode(job), routing_key="newsletter")
        await sending(smtp_server, 1)  # A holds the whole issue as one chunk
        await start_service(config)  # B
        flagged = False
        await role.revoke("UPDATE ON deliveries")
        try:
            until = time.monotonic() + 2.0
            while time.monotonic() < until:
                _, body = await readiness(worker_a)
                flagged = flagged or check(body, "heartbeat").get("ok") is False
                await asyncio.sleep(0.05)
        finally:
            await role.grant("UPDATE ON deliveries")

        async def done() -> bool:
            return await issue_state(db, job["id"]) == "done"

        finished = await reached(done, timeout=20)
        healthy_again = check((await readiness(worker_a))[1], "heartbeat").get("ok") is True
        await worker_a.stop()  # before its role goes
    wanted = [email for email, _, _ in audience]
    summary = (
        f"{figures(smtp_server.received, wanted)}; heartbeat flagged on /readyz: {flagged},"
        f" ok again: {healthy_again}; issue done: {finished}; ledger"
        f" {await outcomes(db, job['id'])}"
    )
    assert copies(smtp_server.received) == {email: 1 for email in wanted}, summary
    assert flagged and healthy_again, summary
    assert finished, summary


async def test_a_worker_cut_from_the_database_past_its_lease_exposes_at_most_the_window(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    """A sends a chunk of 200 and is cut from the database (its login refused, its sessions
    terminated) for 6 s, twice the lease; B retakes A's rows when the lease lapses. A's
    recorder keeps its slots while its writes fail, so A stops after the window of
    unrecorded sends, and a late 'sent' wins over a row handed back but not yet claimed
    again: of 200 recipients, at most 64 duplicates, 0 lost, every row sent."""
    audience = people(200)
    await subscribe(database_url, audience)
    smtp_server.data_delay = 0.05
    config["newsletter"] = {"chunk_size": 200, "pool_size": 2}
    async with worker_role(database_url) as role:
        worker_a = await start_service(as_role(config, role.url))
        job = issue()
        await portal.publish(encode(job), routing_key="newsletter")
        await sending(smtp_server, 5)
        await start_service(config)  # B
        await role.cut()
        try:
            await asyncio.sleep(6)  # the fault itself: longer than the 3 s lease
        finally:
            await role.restore()

        async def done() -> bool:
            return await issue_state(db, job["id"]) == "done"

        finished = await reached(done, timeout=40)
        await worker_a.stop()  # before its role goes
    wanted = [email for email, _, _ in audience]
    counts = copies(smtp_server.received)
    duplicates = sum(count - 1 for count in counts.values() if count > 1)
    summary = (
        f"{figures(smtp_server.received, wanted)} (bound {RECORD_WINDOW}); issue done:"
        f" {finished}; ledger {await outcomes(db, job['id'])}"
    )
    assert all(counts[email] >= 1 for email in wanted), summary
    assert duplicates <= RECORD_WINDOW, summary
    assert finished and await outcomes(db, job["id"]) == {"sent": 200}, summary
