"""The outbox table: written in the caller's transaction, sequenced in commit order, read
after a position, purged after the retention, erased with a person."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from mailer.adapters import outbox
from mailer.core.events import body


async def test_an_event_is_kept_as_published_and_read_after_a_position(
    db: asyncpg.Connection,
) -> None:
    event = outbox.event(
        "message.delivered",
        kind="receipt",
        recipient="jan.kowalski@example.pl",
        message_id="<1@acme.pl>",
        detail={"reply": "250 2.0.0 Ok"},
        at=datetime(2026, 12, 7, 10, 15, 0, 123000, tzinfo=UTC),
    )
    async with db.transaction():
        assert await outbox.append(db, [event]) == 1
    assert await outbox.events_after(db, "default", 0, 10) == []  # not yet sequenced
    assert await outbox.sequence(db, 100) == 1
    (stored,) = await outbox.events_after(db, "default", 0, 10)
    assert (stored.position, stored.id, stored.type) == (1, event.id, "message.delivered")
    assert stored.body == body(event)
    assert stored.body["occurred_at"] == "2026-12-07T10:15:00.123Z"
    assert await outbox.events_after(db, "default", 1, 10) == []
    assert await outbox.events_after(db, "acme", 0, 10) == []
    assert await outbox.newest_position(db) == 1
    assert await outbox.newest_position(db, "acme") == 0


async def test_a_rolled_back_change_leaves_no_event(db: asyncpg.Connection) -> None:
    try:
        async with db.transaction():
            await outbox.append(db, [outbox.event("issue.started")])
            raise RuntimeError("the change failed")
    except RuntimeError:
        pass
    assert await db.fetchval("SELECT count(*) FROM events") == 0


async def test_a_late_commit_gets_a_later_position_than_rows_sequenced_before_it(
    database_url: str,
) -> None:
    """seq 1 commits after seq 2 was sequenced: a reader at position 1 still gets it."""
    late = await asyncpg.connect(database_url)
    early = await asyncpg.connect(database_url)
    try:
        slow = late.transaction()
        await slow.start()
        first = outbox.event("message.delivered")
        await outbox.append(late, [first])  # takes seq 1, not committed
        second = outbox.event("message.failed")
        async with early.transaction():
            await outbox.append(early, [second])
        assert await outbox.sequence(early, 100) == 1
        seen = await outbox.events_after(early, "default", 0, 10)
        await slow.commit()
        assert await outbox.sequence(early, 100) == 1
        later = await outbox.events_after(early, "default", seen[-1].position, 10)
    finally:
        await late.close()
        await early.close()
    assert [(e.position, e.id) for e in seen] == [(1, second.id)]
    assert [(e.position, e.id) for e in later] == [(2, first.id)]


async def test_published_rows_are_purged_after_the_retention_in_bounded_batches(
    db: asyncpg.Connection,
) -> None:
    await outbox.append(db, [outbox.event("message.delivered") for _ in range(5)])
    await outbox.sequence(db, 100)
    await outbox.mark_published(db, [1, 2, 3])
    await db.execute("UPDATE events SET published_at = now() - interval '8 days'")
    await db.execute("UPDATE events SET published_at = NULL WHERE position > 3")
    assert await outbox.purge(db, timedelta(days=7), 2) == 2
    assert await outbox.purge(db, timedelta(days=7), 2) == 1
    assert await outbox.purge(db, timedelta(days=7), 2) == 0
    left = await db.fetch("SELECT position FROM events ORDER BY position")
    assert [r["position"] for r in left] == [4, 5]


async def test_an_erased_address_leaves_the_kept_events(db: asyncpg.Connection) -> None:
    mine = outbox.event("message.delivered", recipient="Jan.Kowalski@example.pl")
    other = outbox.event("message.delivered", recipient="ola@example.pl")
    await outbox.append(db, [mine, other])
    assert await outbox.erase_recipient(db, "jan.kowalski@example.pl") == 1
    await outbox.sequence(db, 100)
    kept = {e.id: e.body for e in await outbox.events_after(db, "default", 0, 10)}
    assert kept[mine.id]["recipient"] is None and kept[mine.id]["erased"] is True
    assert kept[other.id]["recipient"] == "ola@example.pl" and "erased" not in kept[other.id]
    text = await db.fetchval("SELECT string_agg(body::text, ' ') FROM events")
    assert "kowalski" not in text.lower()


async def test_sequencing_in_parallel_transactions_never_gives_one_position_twice(
    database_url: str,
) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=4, max_size=4)
    try:

        async def write(n: int) -> None:
            async with pool.acquire() as conn, conn.transaction():
                await outbox.append(conn, [outbox.event("message.delivered") for _ in range(n)])

        await asyncio.gather(*(write(10) for _ in range(8)))
        async with pool.acquire() as conn:
            while await outbox.sequence(conn, 7):
                pass
            positions = [r["position"] for r in await conn.fetch("SELECT position FROM events")]
    finally:
        await pool.close()
    assert sorted(positions) == list(range(1, 81))


async def test_the_newest_position_is_kept_so_positions_never_start_again(
    db: asyncpg.Connection,
) -> None:
    await outbox.append(db, [outbox.event("message.delivered") for _ in range(3)])
    await outbox.sequence(db, 100)
    await outbox.mark_published(db, [1, 2, 3])
    await db.execute("UPDATE events SET published_at = now() - interval '30 days'")
    assert await outbox.purge(db, timedelta(days=7), 100) == 2
    await outbox.append(db, [outbox.event("message.failed")])
    await outbox.sequence(db, 100)
    (after,) = await outbox.events_after(db, "default", 3, 10)
    assert (after.position, after.type) == (4, "message.failed")
