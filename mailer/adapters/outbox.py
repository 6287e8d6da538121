"""The one writer of the `events` table: the transactional outbox of events back to the
portal (CONTRACT §7, mailer/core/events.py).

A change that has an event writes it here, with `append`, on the connection and in the
transaction of the change itself: both commit, or neither. The relay leader (parts/events.py,
one at a time under an advisory lock) then

1. sequences the rows committed since: gives them `position`, max + 1 onwards in `seq`
   order, in one transaction per batch. `seq` comes from a sequence and can commit out of
   order; `position` is handed out only to what is committed, so it grows in commit order
   and a reader that follows it (`events_after`) never skips a late commit;
2. publishes them in position order and marks them published: normally in one statement
   with 1 (`sequence_as_published`), in a transaction that commits once the broker
   confirmed; while the broker is away it goes on sequencing alone, and publishes the
   backlog (`unpublished`, `mark_published`) once it is back;
3. `purge`s rows published longer ago than the retention, a bounded batch at a time.

Reading is open to anyone: `events_after` and `newest_position` (webhooks), `kept` (replay).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias
from uuid import UUID

import asyncpg

from mailer.core.events import (
    DEFAULT_ACCOUNT,
    Event,
    EventType,
    StoredEvent,
    body,
    event_type,
)

# The advisory lock the relay leader holds for as long as it relays ('mailer.ev' in hex).
RELAY_LOCK = 0x6D61696C2E6576  # 'mail.ev': fits in a bigint

Connection: TypeAlias = asyncpg.Connection | asyncpg.Pool  # a reader takes either


def new_id() -> UUID:
    return uuid.uuid4()


def now() -> datetime:
    return datetime.now(UTC)


def _encode(event: Event) -> str:
    return json.dumps(body(event), separators=(",", ":"), ensure_ascii=False)


_APPEND = """
INSERT INTO events (id, account, type, occurred_at, body)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]::jsonb[])
"""


async def append(conn: asyncpg.Connection, events: Sequence[Event]) -> int:
    """Write events in the caller's transaction, in one statement. Returns how many."""
    if not events:
        return 0
    await conn.execute(
        _APPEND,
        [e.id for e in events],
        [e.account for e in events],
        [e.type for e in events],
        [e.occurred_at for e in events],
        [_encode(e) for e in events],
    )
    return len(events)


def _stored(row: asyncpg.Record) -> StoredEvent:
    raw = row["body"]
    return StoredEvent(
        position=row["position"],
        id=row["id"],
        type=event_type(row["type"]),
        occurred_at=row["occurred_at"],
        account=row["account"],
        body=json.loads(raw) if isinstance(raw, str) else dict(raw),
    )


_COLUMNS = "position, id, type, occurred_at, account, body::text AS body"


async def events_after(
    conn: Connection, account: str, position: int, limit: int
) -> list[StoredEvent]:
    """An account's sequenced events after `position`, in position order, up to `limit`."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM events WHERE account = $1 AND position > $2"
        " ORDER BY position LIMIT $3",
        account,
        position,
        limit,
    )
    return [_stored(r) for r in rows]


async def newest_position(conn: Connection, account: str | None = None) -> int:
    """The highest position given so far (of `account`'s events, if named); 0 for none."""
    if account is None:
        value = await conn.fetchval("SELECT max(position) FROM events")
    else:
        value = await conn.fetchval("SELECT max(position) FROM events WHERE account = $1", account)
    return int(value or 0)


async def lead(conn: asyncpg.Connection) -> bool:
    """Whether this connection holds the relay's lock now (taken if free). A session lock:
    it goes with the connection, so another process takes over once this one's is gone."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK))


# --- the relay leader's writes -------------------------------------------------------------

_NEXT = """
WITH base AS (SELECT coalesce(max(position), 0) AS top FROM events),
next AS (
    SELECT seq, row_number() OVER (ORDER BY seq) AS n
      FROM (SELECT seq FROM events WHERE position IS NULL ORDER BY seq LIMIT $1) s
)
UPDATE events e SET position = base.top + next.n{published}
  FROM next, base
 WHERE e.seq = next.seq
"""
_SEQUENCE = _NEXT.format(published="")
_SEQUENCE_AS_PUBLISHED = (
    _NEXT.format(published=", published_at = now()")
    + " RETURNING e.position, e.id, e.type, e.occurred_at, e.account, e.body::text AS body"
)


async def sequence(conn: asyncpg.Connection, limit: int) -> int:
    """Give up to `limit` committed rows their position, in one transaction. Only the
    holder of RELAY_LOCK calls it. Returns how many."""
    async with conn.transaction():
        result: str = await conn.execute(_SEQUENCE, limit)
    return int(result.rsplit(" ", 1)[1])


async def sequence_as_published(conn: asyncpg.Connection, limit: int) -> list[StoredEvent]:
    """In the caller's transaction, which commits only once the broker confirmed them: give
    up to `limit` committed rows their position and mark them published, in one statement
    (each row written once more, not twice). Returns them in position order, to publish."""
    rows = await conn.fetch(_SEQUENCE_AS_PUBLISHED, limit)
    return sorted((_stored(r) for r in rows), key=lambda e: e.position)


async def unpublished(conn: asyncpg.Connection, limit: int) -> list[StoredEvent]:
    """Sequenced rows not yet published, in position order."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM events WHERE published_at IS NULL AND position IS NOT NULL"
        " ORDER BY position LIMIT $1",
        limit,
    )
    return [_stored(r) for r in rows]


async def mark_published(conn: asyncpg.Connection, positions: Sequence[int]) -> int:
    result: str = await conn.execute(
        "UPDATE events SET published_at = now() WHERE position = ANY($1::bigint[])"
        " AND published_at IS NULL",
        list(positions),
    )
    return int(result.rsplit(" ", 1)[1])


async def purge(conn: asyncpg.Connection, retention: timedelta, limit: int) -> int:
    """Delete, of the `limit` oldest rows, those published longer than `retention` ago
    (oldest first: no index on the time is kept up for this). The row with the highest
    position stays, whatever its age: positions go on from it, never back to 1 (a webhook's
    cursor would skip what followed). Returns how many."""
    result: str = await conn.execute(
        "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT $2)"
        " AND published_at < now() - $1::interval"
        " AND position < (SELECT max(position) FROM events)",
        retention,
        limit,
    )
    return int(result.rsplit(" ", 1)[1])


@dataclass(frozen=True, slots=True)
class Backlog:
    waiting: int  # not yet published
    oldest: datetime | None  # the oldest unpublished event's time
    measured_at: datetime  # by the database's clock


async def backlog(conn: Connection) -> Backlog:
    row = await conn.fetchrow(
        "SELECT count(*) AS waiting, min(occurred_at) AS oldest, now() AS at FROM ("
        " SELECT occurred_at FROM events WHERE position IS NULL UNION ALL"
        " SELECT occurred_at FROM events WHERE published_at IS NULL AND position IS NOT NULL"
        ") waiting"
    )
    assert row is not None
    return Backlog(row["waiting"], row["oldest"], row["at"])


async def kept(
    conn: Connection,
    *,
    account: str,
    since: datetime,
    until: datetime | None = None,
    types: Iterable[EventType] = (),
    after: int = 0,
    limit: int = 500,
) -> list[StoredEvent]:
    """Kept events of an account that happened in [since, until), of `types` if named, in
    position order after `after` (for paging): what a replay publishes again."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM events WHERE account = $1 AND occurred_at >= $2"
        " AND ($3::timestamptz IS NULL OR occurred_at < $3)"
        " AND (cardinality($4::text[]) = 0 OR type = ANY($4::text[]))"
        " AND position > $5 ORDER BY position LIMIT $6",
        account,
        since,
        until,
        list(types),
        after,
        limit,
    )
    return [_stored(r) for r in rows]


async def erase_recipient(conn: asyncpg.Connection, email: str) -> int:
    """A person erased: their address leaves every kept event, in the caller's transaction;
    the events stay, with `recipient` null and `erased` true. Returns how many."""
    result: str = await conn.execute(
        'UPDATE events SET body = body || \'{"recipient": null, "erased": true}\'::jsonb'
        " WHERE lower(body ->> 'recipient') = lower($1) AND body ->> 'recipient' IS NOT NULL",
        email,
    )
    return int(result.rsplit(" ", 1)[1])


def event(
    type_: EventType,
    *,
    account: str = DEFAULT_ACCOUNT,
    job_id: UUID | None = None,
    kind: str | None = None,
    list_slug: str | None = None,
    recipient: str | None = None,
    message_id: str | None = None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> Event:
    """A new event, with a new id, happening now (or `at`)."""
    return Event(
        id=new_id(),
        type=type_,
        occurred_at=at or now(),
        account=account,
        job_id=job_id,
        kind=kind,
        list=list_slug,
        recipient=recipient,
        message_id=message_id,
        detail=detail,
    )


# --- events of an issue's changes (read from the issues, in the change's transaction) ----


async def issue_event(
    conn: asyncpg.Connection,
    type_: EventType,
    issue_id: UUID,
    detail: dict[str, Any] | None = None,
) -> Event:
    """An event of one issue, with its list's slug."""
    slug = await conn.fetchval(
        "SELECT l.slug FROM issues i JOIN lists l ON l.id = i.list_id WHERE i.id = $1", issue_id
    )
    return event(type_, job_id=issue_id, kind="newsletter", list_slug=slug, detail=detail)


async def issues_finished(conn: asyncpg.Connection, issue_ids: Sequence[UUID]) -> list[Event]:
    """issue.finished for each issue that was just done, with its final counts."""
    rows = await conn.fetch(
        "SELECT i.id, l.slug, i.state, i.final_counts::text AS counts"
        " FROM issues i JOIN lists l ON l.id = i.list_id WHERE i.id = ANY($1::uuid[])"
        " ORDER BY i.id",
        list(issue_ids),
    )
    at = now()
    return [
        event(
            "issue.finished",
            job_id=r["id"],
            kind="newsletter",
            list_slug=r["slug"],
            detail={"state": r["state"], "counts": json.loads(r["counts"] or "{}")},
            at=at,
        )
        for r in rows
    ]


async def delivery_event(
    conn: asyncpg.Connection, type_: EventType, delivery_id: int, detail: dict[str, Any]
) -> Event | None:
    """An event about one delivery that went out (a bounce, a complaint), as the ledger
    knows it: its job, kind, list, Message-ID and, of a newsletter, the subscriber's address
    (the ledger keeps no receipt's: null). None when the delivery is gone."""
    row = await conn.fetchrow(
        "SELECT d.job_id, j.kind, l.slug, d.message_id, s.email FROM deliveries d"
        " LEFT JOIN jobs j ON j.id = d.job_id"
        " LEFT JOIN issues i ON i.id = d.job_id LEFT JOIN lists l ON l.id = i.list_id"
        " LEFT JOIN subscribers s ON s.id = d.subscriber_id"
        " WHERE d.id = $1",
        delivery_id,
    )
    if row is None:
        return None
    return event(
        type_,
        job_id=row["job_id"],
        kind=row["kind"],
        list_slug=row["slug"],
        recipient=row["email"],
        message_id=row["message_id"],
        detail=detail,
    )
