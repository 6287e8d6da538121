"""Lists, subscribers and their per-list status: the one writer of the `lists`,
`subscribers` and `subscriptions` tables.

`subscribers.email` is the one place an address is held in clear. Erasing a person deletes
that row (and with it their subscriptions) and leaves the keyed hash in `suppressions`.
There is one unsubscribe (`unsubscribe`), whatever asked for it: it also takes the person
out of every issue of the list still being sent, and is announced on the `mailer_optout`
channel so that workers drop any of their messages already in hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

import asyncpg

from mailer.adapters import outbox, suppressions
from mailer.adapters.database import (
    execute,
    fetch,
    fetchrow,
    from_row,
    transaction,
    unavailable_is_temporary,
)
from mailer.adapters.deliveries import suppress_waiting
from mailer.core.audience import ImportedPerson
from mailer.core.consent import SubscriptionStatus
from mailer.core.events import Event, EventType
from mailer.core.locales import Locale
from mailer.metrics import Metrics

OPTOUT_CHANNEL = "mailer_optout"
# What made a subscription what it is.
Source = Literal["portal", "import", "confirmation", "page", "one-click", "complaint", "operator"]


@dataclass(frozen=True, slots=True)
class Subscriber:
    id: int
    email: str
    name: str | None
    locale: Locale | None


@dataclass(frozen=True, slots=True)
class Standing:
    """A subscriber's status on one list, as a page shows it."""

    subscriber: Subscriber
    status: SubscriptionStatus
    changed_at: datetime


@dataclass(frozen=True, slots=True)
class ImportCounts:
    added: int
    already_subscribed: int
    kept_unsubscribed: int
    suppressed: int
    duplicates: int = 0


async def unsubscribe(
    conn: asyncpg.Connection, subscriber_id: int, source: Source, *, list_id: int | None = None
) -> dict[int, SubscriptionStatus]:
    """The one unsubscribe, whatever asked for it (the portal, the page's button, a one-click
    POST, a complaint, an operator), in the caller's transaction: the person's subscription
    to the list (to every list, without one) ends; their messages of those lists' issues
    still waiting to go out are suppressed (by mailer/adapters/deliveries.py); and workers
    are told to drop any such message they hold. It writes no suppression: leaving lists
    stops newsletters, not receipts. Returns the status every subscription it found had
    before, changed or not."""
    rows = await conn.fetch(
        "SELECT list_id, status FROM subscriptions"
        " WHERE subscriber_id = $1 AND ($2::smallint IS NULL OR list_id = $2)"
        " ORDER BY list_id FOR UPDATE",
        subscriber_id,
        list_id,
    )
    before: dict[int, SubscriptionStatus] = {row["list_id"]: row["status"] for row in rows}
    left = [one for one, status in before.items() if status != "unsubscribed"]
    if left:
        await conn.execute(
            "UPDATE subscriptions SET status = 'unsubscribed', source = $3, changed_at = now()"
            " WHERE subscriber_id = $1 AND list_id = ANY($2::smallint[])",
            subscriber_id,
            left,
            source,
        )
        email: str | None = await conn.fetchval(
            "SELECT email FROM subscribers WHERE id = $1", subscriber_id
        )
        await outbox.append(
            conn,
            await _subscription_events(
                conn, "subscription.unsubscribed", left, email, {"source": source}
            ),
        )
        await suppress_waiting(conn, subscriber_id, left, email)
        lists = "*" if list_id is None else str(list_id)
        await conn.execute("SELECT pg_notify($1, $2)", OPTOUT_CHANNEL, f"{subscriber_id}:{lists}")
    return before


async def _subscription_events(
    conn: asyncpg.Connection,
    type_: EventType,
    list_ids: Sequence[int],
    email: str | None,
    detail: dict[str, str],
) -> list[Event]:
    """An event of a person's subscription to each of these lists."""
    rows = await conn.fetch(
        "SELECT slug FROM lists WHERE id = ANY($1::smallint[]) ORDER BY id", list(list_ids)
    )
    at = outbox.now()
    return [
        outbox.event(
            type_, kind="subscription", list_slug=r["slug"], recipient=email, detail=detail, at=at
        )
        for r in rows
    ]


class Subscribers:
    def __init__(self, pool: asyncpg.Pool, metrics: Metrics | None = None) -> None:
        self._pool = pool
        self._metrics = metrics
        if metrics is not None:
            for source in get_args(Source):  # every source shown from the start, at 0
                if source != "operator":  # a command's, in a process of its own
                    metrics.unsubscribes.labels(source)

    async def list_ids(self, slugs: Iterable[str]) -> dict[str, int]:
        """The numeric id of every list (they go into tokens), made on first use."""
        wanted = sorted(set(slugs))
        await execute(
            self._pool,
            "lists",
            "INSERT INTO lists (slug) SELECT unnest($1::text[]) ON CONFLICT (slug) DO NOTHING",
            wanted,
        )
        rows = await fetch(
            self._pool, "lists", "SELECT id, slug FROM lists WHERE slug = ANY($1)", wanted
        )
        return {row["slug"]: row["id"] for row in rows}

    async def subscribe(
        self,
        *,
        list_id: int,
        address_key: bytes,
        email: str,
        name: str | None,
        locale: str | None,
        confirmed: bool,
        source: Source = "portal",
    ) -> tuple[int, SubscriptionStatus | None]:
        """Subscribe, or (unconfirmed) mark pending. Returns the subscriber id and the
        status before. Asking to subscribe lifts an erasure: the person asked again."""
        async with transaction(self._pool, "subscribe") as conn:
            subscriber_id: int = await conn.fetchval(
                "INSERT INTO subscribers (address_key, email, name, locale)"
                " VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (address_key) DO UPDATE SET email = excluded.email,"
                "   name = coalesce(excluded.name, subscribers.name),"
                "   locale = coalesce(excluded.locale, subscribers.locale), updated_at = now()"
                " RETURNING id",
                address_key,
                email,
                name,
                locale,
            )
            await suppressions.forget_erasure(conn, address_key)
            before: SubscriptionStatus | None = await conn.fetchval(
                "SELECT status FROM subscriptions WHERE list_id = $1 AND subscriber_id = $2"
                " FOR UPDATE",
                list_id,
                subscriber_id,
            )
            status = "subscribed" if confirmed or before == "subscribed" else "pending"
            await conn.execute(
                "INSERT INTO subscriptions (list_id, subscriber_id, status, source)"
                " VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (list_id, subscriber_id) DO UPDATE"
                "   SET status = excluded.status, source = excluded.source, changed_at = now()"
                "   WHERE subscriptions.status <> excluded.status",
                list_id,
                subscriber_id,
                status,
                source,
            )
            if status == "subscribed" and before != "subscribed":
                await outbox.append(
                    conn,
                    await _subscription_events(
                        conn, "subscription.confirmed", [list_id], email, {"source": source}
                    ),
                )
        return subscriber_id, before

    async def unsubscribe(
        self, subscriber_id: int, list_id: int, source: Source
    ) -> SubscriptionStatus | None:
        """Unsubscribe someone from one list (see `unsubscribe`); returns their status on it
        before, None if they were never on it."""
        async with transaction(self._pool, "unsubscribe") as conn:
            before = await unsubscribe(conn, subscriber_id, source, list_id=list_id)
        self._count_unsubscribes(before, source)
        return before.get(list_id)

    async def unsubscribe_address(
        self, address_key: bytes, source: Source, *, list_id: int | None = None
    ) -> dict[int, SubscriptionStatus]:
        """Unsubscribe the person with this address from one list, or every list (see
        `unsubscribe`): the portal's unsubscribe, and an operator's. Returns the status each
        of their subscriptions had before; none when the address is nobody's."""
        async with transaction(self._pool, "unsubscribe") as conn:
            subscriber_id: int | None = await conn.fetchval(
                "SELECT id FROM subscribers WHERE address_key = $1", address_key
            )
            if subscriber_id is None:
                return {}
            before = await unsubscribe(conn, subscriber_id, source, list_id=list_id)
        self._count_unsubscribes(before, source)
        return before

    def _count_unsubscribes(self, before: Mapping[int, SubscriptionStatus], source: Source) -> None:
        """The metric of subscriptions ended, after they were committed."""
        ended = sum(1 for status in before.values() if status != "unsubscribed")
        if ended and self._metrics is not None:
            self._metrics.unsubscribes.labels(source).inc(ended)

    async def erase(self, address_key: bytes, email: str) -> bool:
        """Forget the person; keep the keyed hash so they are not mailed again unasked. Their
        address (`email`, as they gave it now, and as the subscriber row held it) leaves the
        kept events too."""
        async with transaction(self._pool, "erase") as conn:
            row = await conn.fetchrow(
                "DELETE FROM subscribers WHERE address_key = $1 RETURNING id, email", address_key
            )
            subscriber_id: int | None = row["id"] if row is not None else None
            await suppressions.keep_erased(conn, address_key)
            await outbox.erase_recipient(conn, email)
            if row is not None and row["email"].lower() != email.lower():
                await outbox.erase_recipient(conn, row["email"])
            if subscriber_id is not None:
                await conn.execute("SELECT pg_notify($1, $2)", OPTOUT_CHANNEL, f"{subscriber_id}:*")
        return subscriber_id is not None

    async def standing(self, subscriber_id: int, list_id: int) -> Standing | None:
        row = await fetchrow(
            self._pool,
            "standing",
            "SELECT s.id, s.email, s.name, s.locale, sub.status, sub.changed_at"
            " FROM subscribers s"
            " JOIN subscriptions sub ON sub.subscriber_id = s.id AND sub.list_id = $2"
            " WHERE s.id = $1",
            subscriber_id,
            list_id,
        )
        if row is None:
            return None
        return from_row(Standing, row, subscriber=from_row(Subscriber, row))

    async def undo_unsubscribe(
        self, subscriber_id: int, list_id: int, unsubscribed_at: datetime
    ) -> bool:
        """Take back the unsubscribe recorded at `unsubscribed_at`, if nothing changed since.

        The page hands out an undo only for an unsubscribe that left `subscribed`, so this
        restores exactly that; a later change (a confirm, another unsubscribe) voids it.
        """
        async with transaction(self._pool, "undo unsubscribe") as conn:
            done = await conn.fetchval(
                "UPDATE subscriptions SET status = 'subscribed', source = 'page',"
                "   changed_at = now()"
                " WHERE list_id = $1 AND subscriber_id = $2 AND status = 'unsubscribed'"
                "   AND changed_at = $3"
                " RETURNING true",
                list_id,
                subscriber_id,
                unsubscribed_at,
            )
            if done:
                await self._confirmed(conn, subscriber_id, list_id, "page")
        return bool(done)

    async def _confirmed(
        self, conn: asyncpg.Connection, subscriber_id: int, list_id: int, source: Source
    ) -> None:
        email: str | None = await conn.fetchval(
            "SELECT email FROM subscribers WHERE id = $1", subscriber_id
        )
        await outbox.append(
            conn,
            await _subscription_events(
                conn, "subscription.confirmed", [list_id], email, {"source": source}
            ),
        )

    async def confirm(self, subscriber_id: int, list_id: int, made_day: int) -> bool:
        """Subscribe someone pending since no later than the day their confirm link was made.

        Only `pending` is confirmed: a link replayed after an unsubscribe changes nothing, and
        so does one older than the request for consent now pending. The hour's slack covers
        the worker's clock (which dates the link) running behind the database's.
        """
        async with transaction(self._pool, "confirm") as conn:
            done = await conn.fetchval(
                "UPDATE subscriptions SET status = 'subscribed', source = 'confirmation',"
                "   changed_at = now()"
                " WHERE list_id = $1 AND subscriber_id = $2 AND status = 'pending'"
                "   AND changed_at < to_timestamp(($3::int + 1) * 86400) + interval '1 hour'"
                " RETURNING true",
                list_id,
                subscriber_id,
                made_day,
            )
            if done:
                await self._confirmed(conn, subscriber_id, list_id, "confirmation")
        if done and self._metrics is not None:
            self._metrics.confirmations.inc()
        return bool(done)

    async def import_rows(self, list_id: int, rows: Iterable[ImportedPerson]) -> ImportCounts:
        """Add one batch of people whose consent is held (see `importing`)."""
        async with self.importing(list_id) as importer:
            return await importer.add(rows)

    @asynccontextmanager
    async def importing(self, list_id: int) -> AsyncIterator[Importer]:
        """An import of many batches on one connection, which remembers every address seen
        so far, so that a row repeating an earlier one is counted as a duplicate."""
        async with unavailable_is_temporary("import"), self._pool.acquire() as conn:
            await conn.execute("CREATE TEMPORARY TABLE import_seen (address_key bytea PRIMARY KEY)")
            try:
                yield Importer(conn, list_id)
            finally:
                await conn.execute("DROP TABLE IF EXISTS import_seen")


class Importer:
    def __init__(self, conn: asyncpg.Connection, list_id: int) -> None:
        self._conn = conn
        self._list_id = list_id
        self._line = 0

    async def add(self, rows: Iterable[ImportedPerson]) -> ImportCounts:
        """COPY a batch into a staging table, then one statement each for subscribers and
        subscriptions. An opt-out or a suppression wins over the file: those people are
        counted, not subscribed. Of rows with the same address the first one counts."""
        records = []
        for row in rows:
            self._line += 1
            records.append((self._line, row.address_key, row.email, row.name, row.locale))
        async with unavailable_is_temporary("import"), self._conn.transaction():
            await self._conn.execute(
                "CREATE TEMPORARY TABLE staged (line bigint, address_key bytea, email text,"
                " name text, locale text) ON COMMIT DROP"
            )
            await self._conn.copy_records_to_table(
                "staged",
                records=records,
                columns=["line", "address_key", "email", "name", "locale"],
            )
            counts = await self._conn.fetchrow(_IMPORT_SQL, self._list_id)
        assert counts is not None
        return ImportCounts(
            added=counts["added"],
            already_subscribed=counts["already"],
            kept_unsubscribed=counts["unsubscribed"],
            suppressed=counts["suppressed"],
            duplicates=len(records) - counts["unseen"],
        )


# Of the batch, the first row of each address not seen in an earlier batch ("unseen");
# the rest are duplicates.
_IMPORT_SQL = """
WITH firsts AS (
    SELECT DISTINCT ON (address_key) * FROM staged ORDER BY address_key, line
), new AS (
    INSERT INTO import_seen SELECT address_key FROM firsts
    ON CONFLICT (address_key) DO NOTHING
    RETURNING address_key
), unseen AS (
    SELECT f.* FROM firsts f JOIN new USING (address_key)
), fresh AS (
    SELECT u.*
    FROM unseen u
    WHERE NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.address_key = u.address_key)
), people AS (
    INSERT INTO subscribers (address_key, email, name, locale)
    SELECT address_key, email, name, locale FROM fresh
    ON CONFLICT (address_key) DO UPDATE
        SET name = coalesce(subscribers.name, excluded.name),
            locale = coalesce(subscribers.locale, excluded.locale)
    RETURNING id
), joined AS (
    INSERT INTO subscriptions (list_id, subscriber_id, status, source)
    SELECT $1, id, 'subscribed', 'import' FROM people
    ON CONFLICT (list_id, subscriber_id) DO UPDATE SET status = 'subscribed', source = 'import',
        changed_at = now()
        WHERE subscriptions.status = 'pending'
    RETURNING subscriber_id
)
SELECT
    (SELECT count(*) FROM joined)::int AS added,
    (SELECT count(*) FROM people p JOIN subscriptions s ON s.subscriber_id = p.id
       AND s.list_id = $1 AND s.status = 'subscribed'
       WHERE p.id NOT IN (SELECT subscriber_id FROM joined))::int AS already,
    (SELECT count(*) FROM people p JOIN subscriptions s ON s.subscriber_id = p.id
       AND s.list_id = $1 AND s.status = 'unsubscribed')::int AS unsubscribed,
    (SELECT count(*) FROM unseen u
       WHERE EXISTS (SELECT 1 FROM suppressions x WHERE x.address_key = u.address_key))::int
       AS suppressed,
    (SELECT count(*) FROM new)::int AS unseen
"""
