"""The one writer of the `deliveries` table: the writes of mailer/core/deliveries.py as rows,
with the SQL functions of `sql/deliveries.sql`.

Every method is one round trip. A delivery being sent is claimed by one worker for a lease
that the worker keeps renewing; a stopped worker's claims lapse and another worker takes
them over. What other owners change together with deliveries (an issue started or
cancelled, an unsubscribe, a bounce) they change through the functions at the end, in
their own transaction.

Only the claims in hand (`held`) are renewed: a claim that committed but whose reply never
arrived (the session cut at that moment) is unknown to the worker, so it lapses and is taken
over like a stopped worker's, instead of being renewed for as long as the process lives.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

import asyncpg

from mailer.adapters import outbox
from mailer.adapters.database import execute, fetch, fetchrow, from_row, transaction
from mailer.core.consent import SubscriptionStatus, SuppressionReason
from mailer.core.deliveries import DeliveryStatus, Write
from mailer.core.events import Event, delivery_detail, delivery_event_type
from mailer.core.jobs import Transactional
from mailer.core.locales import Locale

log = logging.getLogger(__name__)
UNSTORABLE_REPLY = "(the relay's reply could not be stored)"
ClaimVerdict = Literal["claimed", "done", "busy", "conflict"]

# A claimed delivery given back unattempted: as it was, or cancelled if its issue was meanwhile.
_HAND_BACK = (
    "status = CASE WHEN EXISTS (SELECT 1 FROM issues i WHERE i.id = d.job_id"
    "                           AND i.state = 'cancelled') THEN 'cancelled'"
    "              WHEN d.attempts > 0 THEN 'retrying' ELSE 'pending' END,"
    " claimed_by = NULL, claimed_until = NULL, updated_at = now()"
)

_CLAIM_CHUNK = """
WITH picked AS (
    SELECT d.id, d.subscriber_id, d.recipient_key, d.attempts, d.created_at
      FROM deliveries d
     WHERE d.job_id = $1 AND d.status IN ('pending', 'retrying')
       AND (d.not_before IS NULL OR d.not_before <= now())
     ORDER BY d.id
     LIMIT $3
       FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE deliveries d
       SET status = 'sending', claimed_by = $2, claimed_until = now() + $4, updated_at = now()
      FROM picked p
     WHERE d.id = p.id
    RETURNING d.id
)
SELECT p.id, p.attempts, p.created_at, s.id AS subscriber_id, s.email, s.name, s.locale,
       sub.status AS subscription, x.reason AS suppression
  FROM picked p
  JOIN claimed c ON c.id = p.id
  LEFT JOIN subscribers s ON s.id = p.subscriber_id
  LEFT JOIN subscriptions sub ON sub.subscriber_id = s.id AND sub.list_id = $5
  LEFT JOIN suppressions x ON x.address_key = p.recipient_key
        AND (x.expires_at IS NULL OR x.expires_at > now())
 ORDER BY p.id
"""


@dataclass(frozen=True, slots=True)
class ReceiptClaim:
    verdict: ClaimVerdict
    delivery_id: int | None
    status: DeliveryStatus | None
    attempts: int
    first_seen: datetime
    suppression: SuppressionReason | None


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A newsletter delivery claimed for sending, with what the database says of its
    recipient now."""

    id: int
    issue_id: UUID
    attempts: int
    created_at: datetime
    subscriber_id: int | None  # None: the person was erased
    email: str | None
    name: str | None
    locale: Locale | None
    subscription: SubscriptionStatus | None
    suppression: SuppressionReason | None


@dataclass(frozen=True, slots=True)
class Recorded:
    ids: set[int] = field(default_factory=set)
    finished_issues: list[UUID] = field(default_factory=list)


def _outcome_events(
    writes: Sequence[Write], recipients: Mapping[int, str], row: asyncpg.Record
) -> list[Event]:
    """The event of each outcome recorded, as the ledger now has it."""
    by_id = {w.delivery_id: w for w in writes}
    at = outbox.now()
    events = []
    for delivery_id, status_text, job_id, kind, slug in zip(
        row["recorded"], row["statuses"], row["job_ids"], row["kinds"], row["lists"], strict=True
    ):
        write = by_id[delivery_id]
        status = DeliveryStatus(status_text)
        type_ = delivery_event_type(status, attempted=write.attempted)
        if type_ is None:
            continue
        events.append(
            outbox.event(
                type_,
                job_id=job_id,
                kind=kind,
                list_slug=slug,
                recipient=recipients.get(delivery_id),
                message_id=write.message_id,
                detail=delivery_detail(
                    status, reply=write.reply, reason=write.detail, retry_at=write.not_before
                ),
                at=at,
            )
        )
    return events


def _count(result: str) -> int:
    return int(result.rsplit(" ", 1)[1])


class Deliveries:
    def __init__(self, pool: asyncpg.Pool, *, worker_id: UUID, lease: float) -> None:
        self._pool = pool
        self.worker_id = worker_id
        self._lease = timedelta(seconds=lease)
        self.held: set[int] = set()  # claimed by this process and not yet settled

    async def claim_receipt(
        self,
        job_id: UUID,
        digest: bytes,
        recipient_key: bytes,
        kind: Transactional = "receipt",
    ) -> ReceiptClaim:
        row = await fetchrow(
            self._pool,
            "claim",
            "SELECT * FROM claim_receipt($1, $2, $3, $4, $5, $6)",
            job_id,
            digest,
            recipient_key,
            self.worker_id,
            self._lease,
            kind,
        )
        assert row is not None
        if row["verdict"] == "claimed":
            self.held.add(row["delivery_id"])
        return from_row(
            ReceiptClaim,
            row,
            status=DeliveryStatus(row["status"]) if row["status"] else None,
            attempts=row["attempts"] or 0,
        )

    async def claim_chunk(self, issue_id: UUID, list_id: int, size: int) -> list[ClaimedDelivery]:
        """Claim up to `size` deliveries of an issue and read their recipients' consent."""
        rows = await fetch(
            self._pool,
            "claim chunk",
            _CLAIM_CHUNK,
            issue_id,
            self.worker_id,
            size,
            self._lease,
            list_id,
        )
        self.held.update(r["id"] for r in rows)
        return [from_row(ClaimedDelivery, r, issue_id=issue_id) for r in rows]

    async def record(
        self, writes: Sequence[Write], recipients: Mapping[int, str] | None = None
    ) -> Recorded:
        """Write outcomes (TemporaryFailure when the database cannot take them now), each
        with its event (`recipients`: the address of each delivery, for the events only; the
        ledger keeps none), and the events of the issues they finish, in one transaction. A
        value the database refuses fails that write alone: it is written again without its
        reply text, so one odd reply never holds up the others."""
        if not writes:
            return Recorded()
        recipients = recipients or {}
        try:
            return await self._record(writes, recipients)
        except asyncpg.DataError:
            if len(writes) > 1:
                parts = [await self.record([write], recipients) for write in writes]
                return Recorded(
                    {i for part in parts for i in part.ids},
                    [issue for part in parts for issue in part.finished_issues],
                )
            log.exception("outcome of delivery %d stored without its reply", writes[0].delivery_id)
            return await self._record([replace(writes[0], reply=UNSTORABLE_REPLY)], recipients)

    async def _record(self, writes: Sequence[Write], recipients: Mapping[int, str]) -> Recorded:
        async with transaction(self._pool, "record") as conn:
            row = await conn.fetchrow(
                "SELECT * FROM record_deliveries($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                self.worker_id,
                [w.delivery_id for w in writes],
                [str(w.status) for w in writes],
                [w.attempted for w in writes],
                [w.reply for w in writes],
                [w.message_id for w in writes],
                [w.detail for w in writes],
                [w.not_before for w in writes],
                [w.suppress for w in writes],
            )
            assert row is not None
            await outbox.append(conn, _outcome_events(writes, recipients, row))
            if row["finished"]:
                await outbox.append(conn, await outbox.issues_finished(conn, row["finished"]))
        # Written, or not ours any more (another worker took it over): no longer in hand.
        self.held.difference_update(w.delivery_id for w in writes)
        return Recorded(set(row["recorded"]), list(row["finished"]))

    async def renew_leases(self) -> int:
        """Extend this worker's claims; returns how many it holds."""
        result: str = await execute(
            self._pool,
            "renew leases",
            "UPDATE deliveries SET claimed_until = now() + $2"
            " WHERE claimed_by = $1 AND status = 'sending' AND id = ANY($3)",
            self.worker_id,
            self._lease,
            list(self.held),
        )
        return _count(result)

    async def hand_back(self, delivery_ids: Sequence[int]) -> int:
        """Give back claimed deliveries untouched: they were not attempted."""
        result: str = await execute(
            self._pool,
            "hand back",
            f"UPDATE deliveries d SET {_HAND_BACK}"
            " WHERE id = ANY($1) AND claimed_by = $2 AND status = 'sending'",
            list(delivery_ids),
            self.worker_id,
        )
        self.held.difference_update(delivery_ids)
        return _count(result)

    async def release_unattempted(self, keep: Sequence[int] = ()) -> int:
        """On shutdown: hand back what this worker claimed and never tried, except `keep`
        (outcomes it knows but could not write yet: their claims stay, so nobody sends
        them again before they are written)."""
        result: str = await execute(
            self._pool,
            "release claims",
            f"UPDATE deliveries d SET {_HAND_BACK}"
            " WHERE claimed_by = $1 AND status = 'sending' AND NOT id = ANY($2)",
            self.worker_id,
            list(keep),
        )
        self.held.intersection_update(keep)
        return _count(result)

    async def reclaim_expired(self, issue_ids: Sequence[UUID]) -> int:
        """Give the rows whose lease lapsed back to the pool: other workers' that stopped, and
        this worker's own that it does not have in hand (a claim whose reply was lost). Rows
        in hand are always recorded by this worker itself, however late."""
        result: str = await execute(
            self._pool,
            "reclaim",
            f"UPDATE deliveries d SET {_HAND_BACK}"
            " WHERE job_id = ANY($1) AND status = 'sending' AND claimed_until < now()"
            " AND (claimed_by <> $2 OR NOT id = ANY($3))",
            list(issue_ids),
            self.worker_id,
            list(self.held),
        )
        return _count(result)


_MATERIALIZE = """
INSERT INTO deliveries (job_id, recipient_key, subscriber_id)
SELECT $1, s.address_key, s.id
  FROM subscriptions sub JOIN subscribers s ON s.id = sub.subscriber_id
 WHERE sub.list_id = $2 AND sub.status = 'subscribed'
ON CONFLICT (job_id, recipient_key) DO NOTHING
"""


async def materialize(conn: asyncpg.Connection, issue_id: UUID, list_id: int) -> int:
    """An issue starting: one delivery for each person subscribed to its list now, in one
    statement, in the caller's transaction. Returns how many."""
    return _count(await conn.execute(_MATERIALIZE, issue_id, list_id))


async def cancel_waiting(conn: asyncpg.Connection, issue_id: UUID) -> int:
    """An issue cancelled: its deliveries not yet attempted, or waiting for a retry, are
    cancelled, in the caller's transaction (those being sent are cancelled as they are
    handed back or recorded). Returns how many."""
    return _count(
        await conn.execute(
            "UPDATE deliveries SET status = 'cancelled', detail = 'issue cancelled',"
            " updated_at = now() WHERE job_id = $1 AND status IN ('pending', 'retrying')",
            issue_id,
        )
    )


async def suppress_waiting(
    conn: asyncpg.Connection, subscriber_id: int, list_ids: Sequence[int], recipient: str | None
) -> int:
    """Someone unsubscribed from these lists: their deliveries of the lists' issues that
    wait to be sent are suppressed, each with its message.suppressed event (to `recipient`),
    in the caller's transaction. Returns how many."""
    rows = await conn.fetch(
        "UPDATE deliveries d SET status = 'suppressed', detail = 'unsubscribed',"
        "   updated_at = now()"
        " FROM issues i JOIN lists l ON l.id = i.list_id"
        " WHERE d.subscriber_id = $1 AND d.status IN ('pending', 'retrying')"
        "   AND i.id = d.job_id AND i.list_id = ANY($2::smallint[])"
        " RETURNING d.job_id, l.slug",
        subscriber_id,
        list(list_ids),
    )
    at = outbox.now()
    detail = delivery_detail(
        DeliveryStatus.SUPPRESSED, reply=None, reason="unsubscribed", retry_at=None
    )
    await outbox.append(
        conn,
        [
            outbox.event(
                "message.suppressed",
                job_id=r["job_id"],
                kind="newsletter",
                list_slug=r["slug"],
                recipient=recipient,
                detail=detail,
                at=at,
            )
            for r in rows
        ],
    )
    return len(rows)


async def record_bounce(
    conn: asyncpg.Connection,
    delivery_id: int,
    *,
    kind: str,  # hard, soft or policy (the column's CHECK holds it to them)
    status: str | None,
    diagnostic: str | None,
    reason: str,
) -> bool:
    """A delivery that went out bounced later, as a bounce report says, with its
    message.bounced event; written in the caller's transaction (the report's
    classification) by `bounce_delivery` (see sql/deliveries.sql), which moves a finished
    issue's stored counts with it. False when nothing was written: the delivery had bounced
    already, or never went out."""
    written: bool = await conn.fetchval(
        "SELECT bounce_delivery($1, $2, $3, $4, $5)",
        delivery_id,
        kind,
        status,
        diagnostic,
        reason[:1000],
    )
    if written:
        detail = {"class": kind, "status": status, "diagnostic": diagnostic}
        bounced = await outbox.delivery_event(conn, "message.bounced", delivery_id, detail)
        await outbox.append(conn, [bounced] if bounced is not None else [])
    return written
