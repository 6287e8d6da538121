"""The one writer of `webhook_endpoints`: an account's HTTPS endpoints, their secrets
(sealed: mailer/core/webhooks/sealing.py) and how far each has read the account's events.

An endpoint follows `events.position`: `cursor_position` is the last event it has taken (a
2xx answer). A new endpoint starts at the account's newest position: it gets the events from
its registration on (a replay reaches back). The batch being tried is fixed by
`batch_through` until it is taken, so that every retry sends the same events under the same
`webhook-id`.

The worker processes share the endpoints through a lease on the row (`claim`): one process
serves an endpoint at a time, one batch in flight, and a process that dies lets its lease
run out, after which another takes the endpoint over. Every change a server makes is made
only while it still holds the lease (`leased_by`).

All times are the database's (`now()`), so that processes on hosts whose clocks differ
agree on what is due.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

import asyncpg

from mailer.adapters import outbox
from mailer.adapters.database import (
    execute,
    fetch,
    fetchrow,
    fetchval,
    from_row,
    unavailable_is_temporary,
)
from mailer.config import Settings
from mailer.core.webhooks.sealing import NONCE_BYTES, SealingKeys
from mailer.core.webhooks.signatures import SECRET_BYTES, secret_bytes, secret_text

log = logging.getLogger(__name__)
State = Literal["active", "disabled"]
DisabledBy = Literal["operator", "gone", "failing"]
MAX_FAILURE_TEXT = 300  # characters of a failure's reason kept


@dataclass(frozen=True, slots=True)
class EndpointView:
    """An endpoint as operators see it: no secret."""

    id: UUID
    account: str
    url: str
    state: State
    disabled_by: DisabledBy | None
    disabled_reason: str | None
    disabled_at: datetime | None
    cursor_position: int
    batch_size: int
    attempts: int
    failing_since: datetime | None
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_failure: str | None
    next_attempt_at: datetime
    rotating_until: datetime | None  # the previous secret signs too until then
    delivered: int
    created_at: datetime
    backlog: int  # the account's events after the cursor
    measured_at: datetime

    @property
    def shown_state(self) -> str:
        """active, failing (retrying after a failure), or disabled (by whom)."""
        if self.state == "disabled":
            return f"disabled ({self.disabled_by})"
        return "failing" if self.failing_since is not None else "active"


@dataclass(frozen=True, slots=True)
class Claim:
    """An endpoint taken by one process, with what it needs to send the next batch."""

    id: UUID
    account: str
    url: str
    keys: tuple[bytes, ...]  # the secrets' keys that sign, newest first
    cursor_position: int
    batch_through: int | None
    batch_size: int
    replays: int
    attempts: int


class NoSuchEndpoint(LookupError):
    def __init__(self, endpoint: UUID) -> None:
        super().__init__(f"no webhook endpoint {endpoint}")


_VIEW = """
SELECT w.id, w.account, w.url, w.state, w.disabled_by, w.disabled_reason, w.disabled_at,
       w.cursor_position, w.batch_size, w.attempts, w.failing_since, w.last_success_at,
       w.last_failure_at, w.last_failure, w.next_attempt_at, w.delivered, w.created_at,
       CASE WHEN w.previous_until > now() THEN w.previous_until END AS rotating_until,
       (SELECT count(*) FROM events e
         WHERE e.account = w.account AND e.position > w.cursor_position) AS backlog,
       now() AS measured_at
  FROM webhook_endpoints w
"""

# Endpoints due, with events after their cursor, not leased by a live process: taken for
# `$3` by worker `$2`, at most `$1` of them, the longest waiting first.
_CLAIM = """
WITH due AS (
    SELECT w.id FROM webhook_endpoints w
     WHERE w.state = 'active' AND w.next_attempt_at <= now()
       AND (w.lease_until IS NULL OR w.lease_until < now())
       AND EXISTS (SELECT 1 FROM events e
                    WHERE e.account = w.account AND e.position > w.cursor_position)
     ORDER BY w.next_attempt_at
     LIMIT $1
       FOR UPDATE SKIP LOCKED
)
UPDATE webhook_endpoints w
   SET leased_by = $2, lease_until = now() + $3::interval
  FROM due
 WHERE w.id = due.id
RETURNING w.id, w.account, w.url, w.secret,
          CASE WHEN w.previous_until > now() THEN w.previous_secret END AS previous_secret,
          w.cursor_position, w.batch_through, w.batch_size, w.replays, w.attempts
"""


def sealing_keys(settings: Settings) -> SealingKeys:
    """What seals the secrets: a key derived from [security] secret_key; those sealed under
    a retired key open while `retired_secret_keys` names it."""
    security = settings.security
    return SealingKeys.from_secrets(security.key(), security.retired())


def _bound(endpoint: UUID) -> bytes:
    return endpoint.bytes


class WebhookEndpoints:
    def __init__(self, pool: asyncpg.Pool, keys: SealingKeys) -> None:
        self._pool = pool
        self._keys = keys

    def _seal(self, endpoint: UUID, secret: str) -> str:
        return self._keys.seal(secret, _bound(endpoint), os.urandom(NONCE_BYTES))

    def _open(self, endpoint: UUID, sealed: str) -> bytes:
        return secret_bytes(self._keys.open(sealed, _bound(endpoint)))

    # --- what operators do ----------------------------------------------------------------

    async def register(self, account: str, url: str, *, batch_size: int) -> tuple[UUID, str]:
        """A new endpoint (its URL checked by the caller) and its secret, which is shown
        once and never again."""
        endpoint = uuid.uuid4()
        secret = secret_text(os.urandom(SECRET_BYTES))
        async with unavailable_is_temporary("webhook registration"), self._pool.acquire() as conn:
            newest = await outbox.newest_position(conn, account)
            await conn.execute(
                "INSERT INTO webhook_endpoints (id, account, url, secret, cursor_position,"
                " batch_size) VALUES ($1, $2, $3, $4, $5, $6)",
                endpoint,
                account,
                url,
                self._seal(endpoint, secret),
                newest,
                batch_size,
            )
        return endpoint, secret

    async def views(self, account: str | None = None) -> list[EndpointView]:
        rows = await fetch(
            self._pool,
            "webhook listing",
            _VIEW + " WHERE $1::text IS NULL OR w.account = $1 ORDER BY w.account, w.created_at",
            account,
        )
        return [EndpointView(**dict(row)) for row in rows]

    async def get(self, endpoint: UUID) -> EndpointView:
        row = await fetchrow(self._pool, "webhook reading", _VIEW + " WHERE w.id = $1", endpoint)
        if row is None:
            raise NoSuchEndpoint(endpoint)
        return EndpointView(**dict(row))

    async def _change(self, endpoint: UUID, sql: str, *args: object) -> None:
        result: str = await execute(self._pool, "webhook change", sql, endpoint, *args)
        if result.endswith(" 0"):
            raise NoSuchEndpoint(endpoint)

    async def rotate_secret(self, endpoint: UUID, overlap: timedelta) -> str:
        """A new secret; the one it replaces goes on signing for `overlap` (both signatures
        are sent), so that the receiver can switch without refusing a request."""
        secret = secret_text(os.urandom(SECRET_BYTES))
        await self._change(
            endpoint,
            "UPDATE webhook_endpoints SET previous_secret = secret, secret = $2,"
            " previous_until = now() + $3::interval WHERE id = $1",
            self._seal(endpoint, secret),
            overlap,
        )
        return secret

    async def disable(self, endpoint: UUID, reason: str) -> None:
        await self._change(
            endpoint,
            "UPDATE webhook_endpoints SET state = 'disabled', disabled_by = 'operator',"
            " disabled_reason = $2, disabled_at = now() WHERE id = $1",
            reason[:MAX_FAILURE_TEXT],
        )

    async def enable(self, endpoint: UUID) -> None:
        """Active again, tried at once; its failures so far are forgotten."""
        await self._change(
            endpoint,
            "UPDATE webhook_endpoints SET state = 'active', disabled_by = NULL,"
            " disabled_reason = NULL, disabled_at = NULL, attempts = 0, failing_since = NULL,"
            " next_attempt_at = now() WHERE id = $1",
        )

    async def remove(self, endpoint: UUID) -> None:
        await self._change(endpoint, "DELETE FROM webhook_endpoints WHERE id = $1")

    async def replay(self, endpoint: UUID, since: datetime) -> int:
        """Deliver again the account's kept events from `since` on: the cursor goes back to
        the position before the first event at or after `since` (never forward), and the
        batches get new ids. Returns the new cursor."""
        position = await fetchval(
            self._pool,
            "webhook replay",
            "UPDATE webhook_endpoints w SET cursor_position = least(w.cursor_position,"
            " coalesce((SELECT min(e.position) - 1 FROM events e WHERE e.account ="
            " w.account AND e.occurred_at >= $2 AND e.position IS NOT NULL),"
            " w.cursor_position)), batch_through = NULL, replays = replays + 1,"
            " next_attempt_at = least(next_attempt_at, now()) WHERE id = $1"
            " RETURNING cursor_position",
            endpoint,
            since,
        )
        if position is None:
            raise NoSuchEndpoint(endpoint)
        return int(position)

    # --- what the dispatcher does --------------------------------------------------------

    async def claim(self, worker: UUID, lease: timedelta, limit: int) -> list[Claim]:
        rows = await fetch(self._pool, "webhook claim", _CLAIM, limit, worker, lease)
        claims = []
        for row in rows:
            try:
                keys = [self._open(row["id"], row["secret"])]
                if row["previous_secret"] is not None:
                    keys.append(self._open(row["id"], row["previous_secret"]))
            except ValueError as exc:  # SealError: [security] secret_key changed
                log.error("webhooks: endpoint %s cannot sign: %s", row["id"], exc)
                continue  # its lease runs out; tried again then
            claims.append(from_row(Claim, row, keys=tuple(keys)))
        return claims

    async def trying(self, claim: Claim, worker: UUID, through: int) -> bool:
        """The batch being tried ends at `through` until it is taken. False: the lease is
        lost (or the endpoint changed: disabled, replayed, removed)."""
        result: str = await execute(
            self._pool,
            "webhook batch",
            "UPDATE webhook_endpoints SET batch_through = $3 WHERE id = $1"
            " AND leased_by = $2 AND state = 'active' AND cursor_position = $4",
            claim.id,
            worker,
            through,
            claim.cursor_position,
        )
        return result.endswith(" 1")

    async def delivered(
        self, claim: Claim, worker: UUID, through: int, count: int, lease: timedelta
    ) -> bool:
        """The batch through `through` was taken: the cursor moves, the failures are
        forgotten, the lease goes on for the next batch. False: the lease was lost."""
        result: str = await execute(
            self._pool,
            "webhook delivered",
            "UPDATE webhook_endpoints SET cursor_position = $3, batch_through = NULL,"
            " attempts = 0, failing_since = NULL, last_success_at = now(),"
            " delivered = delivered + $4, next_attempt_at = now(),"
            " lease_until = now() + $5::interval"
            " WHERE id = $1 AND leased_by = $2 AND cursor_position = $6",
            claim.id,
            worker,
            through,
            count,
            lease,
            claim.cursor_position,
        )
        return result.endswith(" 1")

    async def failed(
        self, endpoint: UUID, worker: UUID, reason: str, delay: float, disable_after: float
    ) -> bool:
        """A batch not taken: tried again after `delay` seconds, or disabled when the
        endpoint has failed for `disable_after` seconds without a success. Returns whether
        it was disabled; the lease is given up."""
        disabled = await fetchval(
            self._pool,
            "webhook failure",
            """
            UPDATE webhook_endpoints SET
                   attempts = attempts + 1,
                   failing_since = coalesce(failing_since, now()),
                   last_failure_at = now(), last_failure = $3,
                   next_attempt_at = now() + make_interval(secs => $4),
                   leased_by = NULL, lease_until = NULL,
                   state = CASE WHEN now() - coalesce(failing_since, now())
                                     >= make_interval(secs => $5)
                                THEN 'disabled' ELSE state END,
                   disabled_by = CASE WHEN now() - coalesce(failing_since, now())
                                           >= make_interval(secs => $5)
                                      THEN 'failing' ELSE disabled_by END,
                   disabled_reason = CASE WHEN now() - coalesce(failing_since, now())
                                               >= make_interval(secs => $5)
                                          THEN 'failing since ' || to_char(
                                               failing_since AT TIME ZONE 'UTC',
                                               'YYYY-MM-DD HH24:MI:SS') || ' UTC: ' || $3
                                          ELSE disabled_reason END,
                   disabled_at = CASE WHEN now() - coalesce(failing_since, now())
                                           >= make_interval(secs => $5)
                                      THEN now() ELSE disabled_at END
             WHERE id = $1 AND leased_by = $2
            RETURNING state = 'disabled'
            """,
            endpoint,
            worker,
            reason[:MAX_FAILURE_TEXT],
            delay,
            disable_after,
        )
        return bool(disabled)

    async def gone(self, endpoint: UUID, worker: UUID, reason: str) -> None:
        """The endpoint answered 410 Gone: disabled until an operator enables it."""
        await execute(
            self._pool,
            "webhook gone",
            "UPDATE webhook_endpoints SET state = 'disabled', disabled_by = 'gone',"
            " disabled_reason = $3, disabled_at = now(), last_failure_at = now(),"
            " last_failure = $3, leased_by = NULL, lease_until = NULL"
            " WHERE id = $1 AND leased_by = $2",
            endpoint,
            worker,
            reason[:MAX_FAILURE_TEXT],
        )

    async def release(self, endpoint: UUID, worker: UUID) -> None:
        """Nothing more to send now: the lease is given up."""
        await execute(
            self._pool,
            "webhook release",
            "UPDATE webhook_endpoints SET leased_by = NULL, lease_until = NULL"
            " WHERE id = $1 AND leased_by = $2",
            endpoint,
            worker,
        )


WEBHOOK_STATES = ("active", "failing", "disabled_gone", "disabled_failing", "disabled_operator")


async def endpoint_counts(pool: asyncpg.Pool) -> dict[str, int]:
    """Endpoints by what operators watch (WEBHOOK_STATES), each state named, 0 for none."""
    rows = await fetch(
        pool,
        "webhook counts",
        "SELECT CASE WHEN state = 'disabled' THEN 'disabled_' || disabled_by"
        " WHEN failing_since IS NOT NULL THEN 'failing' ELSE 'active' END AS state,"
        " count(*) AS n FROM webhook_endpoints GROUP BY 1",
    )
    counts = dict.fromkeys(WEBHOOK_STATES, 0)
    counts.update({row["state"]: row["n"] for row in rows})
    return counts
