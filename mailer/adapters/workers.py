"""The worker processes in PostgreSQL: each registers at start, heartbeats while it runs and
deregisters on a clean stop; one that falls silent for longer than its `gone_after` is gone.

Ages are measured by the database's clock (`now()`), so that processes on hosts whose clocks
differ are judged alike.

Each process also reports how many deliveries it holds unacknowledged per queue: summed over
the processes alive, that is a queue's unacked count, which plain AMQP does not tell. A
process that died is still counted until it is gone, though the broker has already put its
deliveries back as ready. And what its relay sessions last did (RelayHealth.report), so that
the console shows the relay as every worker sees it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import asyncpg

from mailer.adapters.database import execute, fetch, fetchrow, fetchval, from_row

Presence = Literal["alive", "gone", "stopped"]
FORGET_AFTER = timedelta(days=1)  # stopped or gone processes are listed for this long


@dataclass(frozen=True, slots=True)
class WorkerProcess:
    id: UUID
    host: str
    pid: int
    version: str
    runs: tuple[str, ...]
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    presence: Presence
    silent_for: float  # seconds since its last heartbeat, by the database's clock
    measured_at: datetime
    unacked: Mapping[str, int]  # deliveries it held unacknowledged, per queue
    unacked_at: datetime | None  # when it counted them
    relay: Mapping[str, Any] | None  # its relay sessions (RelayHealth.report); None: no worker
    relay_at: datetime | None  # when it reported them


@dataclass(frozen=True, slots=True)
class Unacked:
    """Deliveries held unacknowledged by the processes alive, per queue."""

    counts: Mapping[str, int]  # a queue no live process holds anything of is left out
    as_of: datetime | None  # the oldest of the counts summed; None: no process alive
    measured_at: datetime


_LIST = """
SELECT w.*, now() AS measured_at,
       extract(epoch FROM now() - w.heartbeat_at)::float8 AS silent_for,
       CASE WHEN w.stopped_at IS NOT NULL THEN 'stopped'
            WHEN w.heartbeat_at < now() - w.gone_after THEN 'gone'
            ELSE 'alive' END AS presence
  FROM workers w
 WHERE coalesce(w.stopped_at, w.heartbeat_at) > now() - $1::interval
 ORDER BY w.stopped_at IS NOT NULL, w.heartbeat_at < now() - w.gone_after, w.started_at DESC
"""


_UNACKED = """
WITH alive AS (
    SELECT * FROM workers
     WHERE stopped_at IS NULL AND heartbeat_at >= now() - gone_after
)
SELECT now() AS measured_at,
       (SELECT min(coalesce(unacked_at, heartbeat_at)) FROM alive) AS as_of,
       (SELECT coalesce(jsonb_object_agg(q.queue, q.n), '{}')
          FROM (SELECT e.key AS queue, sum(e.value::bigint) AS n
                  FROM alive, jsonb_each_text(alive.unacked) e GROUP BY e.key) q) AS counts
"""


_STATE = """
     unacked = coalesce($2::jsonb, unacked),
     unacked_at = CASE WHEN $2::jsonb IS NULL THEN unacked_at ELSE now() END,
     relay = coalesce($3::jsonb, relay),
     relay_at = CASE WHEN $3::jsonb IS NULL THEN relay_at ELSE now() END
"""


def _json(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(dict(value))


class Workers:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def register(
        self,
        worker_id: UUID,
        *,
        host: str,
        pid: int,
        version: str,
        runs: Sequence[str],
        gone_after: float,
    ) -> None:
        await execute(
            self._pool,
            "register worker",
            "INSERT INTO workers (id, host, pid, version, runs, gone_after)"
            " VALUES ($1, $2, $3, $4, $5, make_interval(secs => $6))"
            " ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), stopped_at = NULL",
            worker_id,
            host,
            pid,
            version,
            list(runs),
            gone_after,
        )
        await execute(
            self._pool,
            "register worker",
            "DELETE FROM workers WHERE coalesce(stopped_at, heartbeat_at) < now() - $1::interval",
            FORGET_AFTER,
        )

    async def report(
        self,
        worker_id: UUID,
        *,
        unacked: Mapping[str, int] | None = None,
        relay: Mapping[str, Any] | None = None,
        heartbeat: bool = False,
    ) -> bool:
        """What this process holds unacknowledged, and what its relay did (a None is left as
        it was), with its heartbeat when `heartbeat`. False when the row is missing (deleted
        by hand): the caller registers again."""
        found = await fetchval(
            self._pool,
            "worker heartbeat" if heartbeat else "report worker state",
            "UPDATE workers SET"
            + (" heartbeat_at = now()," if heartbeat else "")
            + _STATE
            + " WHERE id = $1 RETURNING true",
            worker_id,
            _json(unacked),
            _json(relay),
        )
        return bool(found)

    async def deregister(self, worker_id: UUID) -> None:
        await execute(
            self._pool,
            "deregister worker",
            "UPDATE workers SET stopped_at = now(), unacked = '{}', unacked_at = now()"
            " WHERE id = $1",
            worker_id,
        )

    async def list(self, *, within: timedelta = FORGET_AFTER) -> list[WorkerProcess]:
        """Alive first, then gone, then stopped; those silent or stopped for longer than
        `within` are left out."""
        rows = await fetch(self._pool, "list workers", _LIST, within)
        return [
            from_row(
                WorkerProcess,
                r,
                runs=tuple(r["runs"]),
                unacked=json.loads(r["unacked"]),
                relay=json.loads(r["relay"]) if r["relay"] is not None else None,
            )
            for r in rows
        ]

    async def unacked(self) -> Unacked:
        """Per queue, the deliveries held unacknowledged by the processes alive."""
        row = await fetchrow(self._pool, "count unacked", _UNACKED)
        assert row is not None
        counts = {key: int(n) for key, n in json.loads(row["counts"]).items() if int(n)}
        return from_row(Unacked, row, counts=counts)
