"""What the operator finds parked: rows of the parked_jobs table, and mailer.dead."""

from __future__ import annotations

import asyncpg

from mailer.adapters.broker import Broker
from mailer.adapters.parked import ParkedJob, decode_properties
from mailer.adapters.topology import DEAD_QUEUE
from tests.support.waiting import eventually


def _job(row: asyncpg.Record) -> ParkedJob:
    return ParkedJob(
        body=bytes(row["body"]),
        origin=row["origin"],
        reason=row["reason"],
        parked_at=row["parked_at"],
        job_id=row["job_id"],
        deliveries=row["deliveries"],
        properties=decode_properties(bytes(row["properties"])),
        id=row["id"],
    )


async def parked_rows(db: asyncpg.Connection) -> list[ParkedJob]:
    return [_job(row) for row in await db.fetch("SELECT * FROM parked_jobs ORDER BY id")]


async def parked(db: asyncpg.Connection, count: int, timeout: float = 15) -> list[ParkedJob]:
    """Wait until `count` jobs are parked in the table, and return them."""

    async def probe() -> list[ParkedJob] | None:
        found = await parked_rows(db)
        return found if len(found) >= count else None

    return await eventually(probe, timeout=timeout)


def reasons(jobs: list[ParkedJob]) -> list[str]:
    return sorted(job.reason for job in jobs)


async def dead_queue_depth(portal: Broker) -> int:
    """Messages ready in mailer.dead, as a passive declare reports them."""
    channel = await portal.open_channel()
    try:
        queue = await channel.declare_queue(DEAD_QUEUE, passive=True)
        return queue.declaration_result.message_count or 0
    finally:
        await channel.close()


async def nothing_parked(db: asyncpg.Connection, portal: Broker) -> bool:
    """No row in the table and no message on its way there."""
    rows = await db.fetchval("SELECT count(*) FROM parked_jobs")
    return rows == 0 and await dead_queue_depth(portal) == 0
