"""A finished issue keeps its counts by outcome on its row, so that the issue list does not
count a million ledger rows again: stored when it is done, or cancelled and settled (a bounce
that comes back later moves one to bounced); active issues are counted live. Real worker,
real relay, real broker; and the migration's backfill."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import asyncpg

from mailer.adapters import database
from mailer.adapters.deliveries import record_bounce
from mailer.adapters.issues import Issues
from mailer.parts.broker import BrokerConnection
from tests.conftest import StartService
from tests.support.jobs import encode
from tests.support.newsletters import issue, outcomes, people, subscribe, until_state
from tests.support.processes import amailer, environment
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

LEFT = ("pending", "sending", "retrying")


async def stored(db: asyncpg.Connection, issue_id: str) -> dict[str, int] | None:
    text = await db.fetchval("SELECT final_counts FROM issues WHERE id = $1", uuid.UUID(issue_id))
    return None if text is None else dict(json.loads(text))


async def listed(database_url: str) -> dict[str, dict[str, int]]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        return {str(s.id): s.counts for s in await Issues(pool).newest()}
    finally:
        await pool.close()


async def progress_counts(database_url: str, issue_id: str) -> dict[str, int]:
    """What `mailer issue status` and the issue's page show (read from the stored counts
    once the issue is finished)."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        found = await Issues(pool).progress(uuid.UUID(issue_id))
    finally:
        await pool.close()
    assert found is not None
    return dict(found.facts.counts)


async def test_an_issue_done_keeps_its_counts_and_an_active_one_is_counted_live(
    config: dict[str, Any],
    start_service: StartService,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    await subscribe(database_url, people(12))
    smtp_server.rcpt_replies["person3@example.pl"] = "550 5.1.1 no such mailbox"
    config["newsletter"] = {"rate": 4}  # slow enough to pause one with most still to send
    service = await start_service(config)
    broker = service.part(BrokerConnection).broker
    done = issue()
    await broker.publish(encode(done), routing_key="newsletter")
    await until_state(db, done["id"], "done")
    assert await outcomes(db, done["id"]) == {"sent": 11, "failed": 1}
    assert await stored(db, done["id"]) == {"sent": 11, "failed": 1}
    # A bounce report that comes back later moves one from sent to bounced, once.
    delivery_id = await db.fetchval(
        "SELECT min(id) FROM deliveries WHERE job_id = $1 AND status = 'sent'",
        uuid.UUID(done["id"]),
    )
    for applied in (True, False):
        async with db.transaction():
            bounced = await record_bounce(
                db, delivery_id, kind="hard", status="5.1.1", diagnostic=None, reason="gone"
            )
        assert bounced is applied
    assert await outcomes(db, done["id"]) == {"sent": 10, "failed": 1, "bounced": 1}
    assert await stored(db, done["id"]) == {"sent": 10, "failed": 1, "bounced": 1}
    assert await progress_counts(database_url, done["id"]) == {
        "sent": 10,
        "failed": 1,
        "bounced": 1,
    }

    paused = issue()
    await broker.publish(encode(paused), routing_key="newsletter")
    env = environment(config)

    async def some_sent() -> bool:
        return (await outcomes(db, paused["id"])).get("sent", 0) >= 2

    await eventually(some_sent, timeout=30)
    assert (await amailer("issue", "pause", paused["id"], env=env)).returncode == 0

    async def settled() -> bool:
        return (await outcomes(db, paused["id"])).get("sending", 0) == 0

    await eventually(settled, timeout=30)
    assert await stored(db, paused["id"]) is None  # active: nothing final yet
    counts = await listed(database_url)
    assert counts[paused["id"]] == await outcomes(db, paused["id"])
    assert counts[paused["id"]]["pending"] > 0
    assert counts[done["id"]] == {"sent": 10, "failed": 1, "bounced": 1}
    shown = await amailer("issue", "list", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    by_id = {row["id"]: row for row in map(json.loads, shown.stdout.splitlines())}
    assert by_id[done["id"]]["counts"] == {"sent": 10, "failed": 1, "bounced": 1}
    assert by_id[paused["id"]]["counts"] == counts[paused["id"]]

    # Cancelled: what was left is cancelled, and the counts are final at once.
    assert (await amailer("issue", "cancel", paused["id"], env=env)).returncode == 0
    await until_state(db, paused["id"], "cancelled")
    final = await outcomes(db, paused["id"])
    assert not any(final.get(status) for status in LEFT)
    assert final["cancelled"] > 0 and final["sent"] >= 2
    assert await stored(db, paused["id"]) == final
    assert (await listed(database_url))[paused["id"]] == final


async def test_cancelled_while_sending_stores_its_counts_once_the_last_is_recorded(
    config: dict[str, Any],
    start_service: StartService,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    await subscribe(database_url, people(30))
    smtp_server.hold_after = 3  # then DATA waits: messages in flight when it is cancelled
    config["smtp"]["timeout"] = 60
    service = await start_service(config)
    broker = service.part(BrokerConnection).broker
    job = issue()
    await broker.publish(encode(job), routing_key="newsletter")

    async def in_flight() -> bool:
        return len(smtp_server.received) >= 3 and sum(smtp_server.in_flight.values()) > 0

    await eventually(in_flight, timeout=30)
    env = environment(config)
    assert (await amailer("issue", "cancel", job["id"], env=env)).returncode == 0
    await until_state(db, job["id"], "cancelled")
    assert (await outcomes(db, job["id"])).get("sending", 0) > 0
    assert await stored(db, job["id"]) is None  # not final while some are in flight
    smtp_server.release.set()

    async def final() -> dict[str, int] | None:
        return await stored(db, job["id"])

    counts = await eventually(final, timeout=30)
    assert counts == await outcomes(db, job["id"])
    assert not any(counts.get(status) for status in LEFT)
    assert counts["cancelled"] > 0 and counts["sent"] > 3
    assert (await listed(database_url))[job["id"]] == counts


async def test_the_migration_stores_the_counts_of_issues_finished_before_it(
    db: asyncpg.Connection, database_url: str
) -> None:
    # This database as it was at version 6, with issues finished then and one still active.
    await db.execute(
        "ALTER TABLE issues DROP COLUMN final_counts;"
        "ALTER TABLE workers DROP COLUMN unacked, DROP COLUMN unacked_at;"
        "DELETE FROM schema_migrations WHERE version = 7"
    )
    list_id = await db.fetchval("SELECT id FROM lists WHERE slug = 'lucid-news'")
    if list_id is None:
        list_id = await db.fetchval("INSERT INTO lists (slug) VALUES ('lucid-news') RETURNING id")
    made = {}
    for name, state, statuses in (
        ("done", "done", ["sent"] * 4 + ["failed", "suppressed"]),
        ("settled", "cancelled", ["sent", "cancelled", "cancelled"]),
        ("in flight", "cancelled", ["sent", "sending", "cancelled"]),
        ("sending", "sending", ["sent", "pending"]),
    ):
        issue_id = uuid.uuid4()
        made[name] = issue_id
        await db.execute(
            "INSERT INTO jobs (id, kind, digest) VALUES ($1, 'newsletter', '\\x00')", issue_id
        )
        await db.execute(
            "INSERT INTO issues (id, list_id, payload, state, send_at, total)"
            ' VALUES ($1, $2, \'{"subject": "Old"}\', $3, now(), $4)',
            issue_id,
            list_id,
            state,
            len(statuses),
        )
        await db.executemany(
            "INSERT INTO deliveries (job_id, recipient_key, status) VALUES ($1, $2, $3)",
            [(issue_id, f"{name}{n}".encode(), status) for n, status in enumerate(statuses)],
        )
    applied = await database.migrate(database_url)
    assert [m.version for m in applied] == [7]
    found = {
        name: await stored(db, str(issue_id)) for name, issue_id in made.items()
    }  # fmt: skip
    assert found == {
        "done": {"sent": 4, "failed": 1, "suppressed": 1},
        "settled": {"sent": 1, "cancelled": 2},
        "in flight": None,
        "sending": None,
    }
    # The last of "in flight" handed back by a worker that stopped, rather than recorded: the
    # first listing counts it and stores its counts.
    await db.execute(
        "UPDATE deliveries SET status = 'cancelled' WHERE job_id = $1 AND status = 'sending'",
        made["in flight"],
    )
    assert (await listed(database_url))[str(made["in flight"])] == {"sent": 1, "cancelled": 2}
    assert await stored(db, str(made["in flight"])) == {"sent": 1, "cancelled": 2}
    assert await stored(db, str(made["sending"])) is None


async def test_the_migration_stores_the_newest_send_of_issues_finished_before_it(
    db: asyncpg.Connection, database_url: str
) -> None:
    """0014: a finished issue's newest send (or capture) kept on its row, which `issue status`
    and the console then read instead of its deliveries; an active issue's stays unset."""
    await db.execute(
        "ALTER TABLE issues DROP COLUMN last_sent_at;"
        "DELETE FROM schema_migrations WHERE version = 14"
    )
    list_id = await db.fetchval(
        "INSERT INTO lists (slug) VALUES ('lucid-news') ON CONFLICT (slug)"
        " DO UPDATE SET slug = excluded.slug RETURNING id"
    )
    newest = await db.fetchval("SELECT now() - interval '3 hours'")
    made = {}
    for name, state, counts, statuses in (
        (
            "done",
            "done",
            '{"sent": 1, "captured": 1, "bounced": 1}',
            ["sent", "captured", "bounced"],
        ),
        ("sending", "sending", None, ["sent", "pending"]),
    ):
        issue_id = uuid.uuid4()
        made[name] = issue_id
        await db.execute(
            "INSERT INTO jobs (id, kind, digest) VALUES ($1, 'newsletter', '\\x00')", issue_id
        )
        await db.execute(
            "INSERT INTO issues (id, list_id, payload, state, send_at, total, started_at,"
            ' final_counts) VALUES ($1, $2, \'{"subject": "Old"}\', $3, now(), $4, now(), $5)',
            issue_id,
            list_id,
            state,
            len(statuses),
            counts,
        )
        # The capture is the newest send; the bounce came back later and is none.
        await db.executemany(
            "INSERT INTO deliveries (job_id, recipient_key, status, updated_at)"
            " VALUES ($1, $2, $3, $4)",
            [
                (issue_id, f"{name}{n}".encode(), status, newest - (1 - n) * timedelta(hours=1))
                for n, status in enumerate(statuses)
            ],
        )
    applied = await database.migrate(database_url)
    assert [m.version for m in applied] == [14]
    kept = dict(await db.fetch("SELECT id, last_sent_at FROM issues"))
    assert kept == {made["done"]: newest, made["sending"]: None}
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        shown = await Issues(pool).progress(made["done"])
    finally:
        await pool.close()
    assert shown is not None and shown.facts.last_sent_at == newest
