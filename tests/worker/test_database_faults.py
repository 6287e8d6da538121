"""The database refusing writes or cutting sessions while the worker runs, for real.

Each test states its figures: lost, duplicated (and the bound), and the time the worker
took to recover once the database was back.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg

from mailer.adapters.broker import Broker
from mailer.adapters.deliveries import Deliveries
from mailer.core.addresses import address_key
from mailer.core.jobs import decode, payload_digest
from mailer.parts.database import Database
from tests.conftest import StartService
from tests.support.dead_letters import nothing_parked as support_nothing_parked
from tests.support.jobs import encode, receipt
from tests.support.newsletters import (
    HASH_KEY,
    issue,
    outcomes,
    people,
    subscribe,
    until_state,
)
from tests.support.outage import database_away
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

ANNA = "anna.nowak@example.pl"


async def _admin(database_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(database_url.rpartition("/")[0] + "/postgres")


async def cut_sessions(admin: asyncpg.Connection, name: str) -> int:
    killed: int = await admin.fetchval(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = $1 AND pid <> pg_backend_pid()",
        name,
    )
    return killed


@asynccontextmanager
async def read_only(database_url: str) -> AsyncIterator[None]:
    """Inside the block every new session of the database is read-only, as on a standby or
    a primary being demoted, and the sessions it had are cut. Leaving it cuts nothing: the
    worker's read-only sessions stay open, for the worker to notice."""
    name = database_url.rpartition("/")[2]
    admin = await _admin(database_url)
    try:
        await admin.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
        await cut_sessions(admin, name)
        yield
    finally:
        await admin.execute(f"ALTER DATABASE {name} RESET default_transaction_read_only")
        await admin.close()


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


def receipts(count: int) -> list[dict[str, Any]]:
    return [
        receipt(to={"email": f"buyer{n}@example.pl", "name": f"Kupujący {n}"}) for n in range(count)
    ]


async def nothing_parked(portal: Broker, database_url: str) -> bool:
    """No job parked in the table, and none on its way there in mailer.dead."""
    conn = await asyncpg.connect(database_url)
    try:
        return await support_nothing_parked(conn, portal)
    finally:
        await conn.close()


async def subscription_of(conn: asyncpg.Connection) -> str | None:
    value: str | None = await conn.fetchval(
        "SELECT sub.status FROM subscriptions sub JOIN subscribers s ON s.id = sub.subscriber_id"
        " WHERE s.email = $1",
        ANNA,
    )
    return value


async def test_a_read_only_database_parks_nothing_and_keeps_the_order_of_changes(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    database_url: str,
) -> None:
    """Fault: `default_transaction_read_only = on` for the database and its sessions cut,
    for 3 s (longer than the 5 rounds of 0.2 s that park a job failing for an unknown
    reason); then writes are allowed again without cutting the read-only sessions.
    Figures: 20 receipts, lost 0, parked 0, duplicates 0 (bound 0: a receipt is claimed in
    the ledger before it is sent, and no claim can be written meanwhile); 4 subscription
    changes end in the last one published; time to recover: measured, printed."""
    await start_service(config)
    await portal.publish(encode(change("subscribe", confirmed=True)), routing_key="subscription")
    jobs = receipts(20)
    changes = [
        change("unsubscribe"),
        change("subscribe", confirmed=True),
        change("unsubscribe"),
        change("subscribe", confirmed=True),
    ]
    checker = await asyncpg.connect(database_url)

    async def subscribed() -> bool:
        return await subscription_of(checker) == "subscribed"

    await eventually(subscribed)
    await checker.close()
    async with read_only(database_url):
        for job in jobs:
            await portal.publish(encode(job), routing_key="receipt")
        for job in changes:
            await portal.publish(encode(job), routing_key="subscription")
        await asyncio.sleep(3)
        assert smtp_server.received == []
    allowed = time.monotonic()

    async def all_delivered() -> bool:
        return len(smtp_server.received) >= len(jobs)

    await eventually(all_delivered, timeout=30)
    recovered = time.monotonic() - allowed
    checker = await asyncpg.connect(database_url)
    try:

        async def changes_applied() -> bool:
            done = await checker.fetchval(
                "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[])",
                [job["id"] for job in changes],
            )
            return bool(done == len(changes))

        await eventually(changes_applied, timeout=30)
        assert await subscription_of(checker) == "subscribed", "the changes were reordered"
        sent = await checker.fetchval(
            "SELECT count(*) FROM deliveries WHERE job_id = ANY($1::uuid[]) AND status = 'sent'",
            [job["id"] for job in jobs],
        )
    finally:
        await checker.close()
    counts = Counter(r.rcpt_tos[0] for r in smtp_server.received)
    assert counts == Counter({job["to"]["email"]: 1 for job in jobs}), (
        f"lost or duplicated receipts: {counts}"
    )
    assert sent == len(jobs)
    assert await nothing_parked(portal, database_url)
    print(f"\nread-only 3 s: lost 0, duplicates 0, parked 0; recovered in {recovered:.1f} s")


async def test_sessions_cut_mid_issue_lose_nobody_and_repeat_nobody(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    database_url: str,
) -> None:
    """Fault: mid-issue, every session of the database is cut (`pg_terminate_backend`) six
    times, 0.4 s apart, then the database takes no connections (`ALLOW_CONNECTIONS false`)
    for 2 s, while receipts come in too.
    Figures: 300 subscribers and 10 receipts, lost 0. Newsletter duplicates 0 (bound 0: no
    process died, and the worker holding a chunk writes its outcomes however late). Receipt
    duplicates at most the 10 in flight (bound: a receipt sent whose outcome could not be
    written within its ~3 s of retries goes back to its queue, and once its lease lapses
    it is sent again). Time to recover after the last fault: measured, printed."""
    audience = people(300)
    await subscribe(database_url, audience)
    smtp_server.data_delay = 0.05  # with 4 connections, at least 4 s for everyone
    config["newsletter"] = {"chunk_size": 30, "pool_size": 4}
    await start_service(config)
    job = issue()
    await portal.publish(encode(job), routing_key="newsletter")

    async def under_way() -> bool:
        return len(smtp_server.received) >= 20

    await eventually(under_way)
    name = database_url.rpartition("/")[2]
    admin = await _admin(database_url)
    jobs = receipts(10)
    killed = 0
    try:
        for n in range(6):
            await portal.publish(encode(jobs[n]), routing_key="receipt")
            killed += await cut_sessions(admin, name)
            await asyncio.sleep(0.4)
    finally:
        await admin.close()
    async with database_away(database_url):
        for late in jobs[6:]:
            await portal.publish(encode(late), routing_key="receipt")
        await asyncio.sleep(2)
    back = time.monotonic()
    assert killed >= 6, "the faults did not hit the worker's sessions"
    assert len(smtp_server.received) < 300, "the issue was over before the faults ended"
    checker = await asyncpg.connect(database_url)
    try:

        async def all_sent() -> dict[str, int] | None:
            found = await outcomes(checker, job["id"])
            return None if found != {"sent": 300} else found

        try:
            await eventually(all_sent, timeout=60)
        except AssertionError:
            raise AssertionError(f"issue rows: {await outcomes(checker, job['id'])}") from None
        await until_state(checker, job["id"], "done", timeout=10)
        recovered = time.monotonic() - back

        async def receipts_delivered() -> bool:
            arrived = {r.rcpt_tos[0] for r in smtp_server.received}
            return all(j["to"]["email"] in arrived for j in jobs)

        try:
            await eventually(receipts_delivered, timeout=30)
        except AssertionError:
            rows = await checker.fetch(
                "SELECT status, claimed_until > now() AS held, attempts FROM deliveries"
                " WHERE job_id = ANY($1::uuid[])",
                [j["id"] for j in jobs],
            )
            raise AssertionError(f"receipt rows: {[tuple(r) for r in rows]}") from None
    finally:
        await checker.close()
    counts = Counter(r.rcpt_tos[0] for r in smtp_server.received)
    buyers = {j["to"]["email"] for j in jobs}
    newsletter = {email: n for email, n in counts.items() if email not in buyers}
    receipt_copies = sum(counts[email] - 1 for email in buyers)
    figures = (
        f"{killed} sessions cut, 2 s refused: newsletter missing"
        f" {300 - len(newsletter)}, duplicates {sum(newsletter.values()) - len(newsletter)};"
        f" receipts missing {sum(1 for b in buyers if not counts[b])}, duplicates"
        f" {receipt_copies} (bound {len(jobs)}); issue done {recovered:.1f} s after"
        " the database was back"
    )
    print("\n" + figures)
    assert newsletter == {email: 1 for email, _, _ in audience}, figures
    assert all(counts[b] for b in buyers), figures
    assert receipt_copies <= len(jobs), figures
    assert await nothing_parked(portal, database_url)


async def test_a_receipt_claim_whose_reply_was_lost_is_sent_after_its_lease(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    """Fault: the claim commits but its reply never reaches the worker (its session cut at
    that moment): the ledger says this worker holds the receipt, the worker does not know.
    Made here by committing that very claim for it. Figures: lost 0 (the worker's heartbeat
    does not keep renewing a claim it does not know it holds), duplicates 0, sent after
    about one lease (3 s in tests)."""
    service = await start_service(config)
    job = receipt()
    decoded = decode(encode(job), max_attachment_bytes=10**7)
    claim = await db.fetchrow(
        "SELECT * FROM claim_receipt($1, $2, $3, $4, $5)",
        uuid.UUID(job["id"]),
        payload_digest(decoded),
        address_key(HASH_KEY, job["to"]["email"]),
        service.worker_id,
        timedelta(seconds=config["worker"]["lease"]),
    )
    assert claim is not None and claim["verdict"] == "claimed"
    await portal.publish(encode(job), routing_key="receipt")

    async def delivered() -> bool:
        return len(smtp_server.received) >= 1

    await eventually(delivered, timeout=20)

    async def recorded() -> bool:
        status = await db.fetchval(
            "SELECT status FROM deliveries WHERE job_id = $1", uuid.UUID(job["id"])
        )
        return bool(status == "sent")

    await eventually(recorded)
    assert len(smtp_server.received) == 1


async def test_issue_rows_whose_claim_reply_was_lost_are_sent_after_their_lease(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    database_url: str,
    db: asyncpg.Connection,
) -> None:
    """Fault: as above, for a chunk of an issue: five rows claimed in this worker's name
    without its knowing. Figures: 50 subscribers, lost 0 (the issue does not stay
    'sending' for as long as the process lives), duplicates 0."""
    audience = people(50)
    await subscribe(database_url, audience)
    smtp_server.data_delay = 0.1
    config["newsletter"] = {"chunk_size": 5, "pool_size": 4}
    service = await start_service(config)
    job = issue()
    await portal.publish(encode(job), routing_key="newsletter")
    await until_state(db, job["id"], "sending")
    list_id = await db.fetchval("SELECT id FROM lists WHERE slug = 'lucid-news'")
    # Another store in the worker's name: its claims are unknown to the worker's own.
    pool = service.part(Database).pool
    lost = Deliveries(pool, worker_id=service.worker_id, lease=config["worker"]["lease"])
    assert len(await lost.claim_chunk(uuid.UUID(job["id"]), list_id, 5)) == 5
    await until_state(db, job["id"], "done", timeout=30)
    assert await outcomes(db, job["id"]) == {"sent": 50}
    counts = Counter(r.rcpt_tos[0] for r in smtp_server.received)
    assert counts == Counter({email: 1 for email, _, _ in audience})
