"""A receipt under a 4xx that lasts several retry tiers stays one message.

The relay answers `451 4.3.0` at RCPT for the receipt's recipient through four tiers of the
retry schedule (0.5, 1, 2 and 4 s here, the shape of the default 30 s … 1 h), then accepts.
While it refuses, every `mailer.*` queue is counted every 50 ms: at no moment is more than one
copy of the job queued anywhere. The relay sees the attempts at the schedule's times, and
the receipt arrives once.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any
from uuid import UUID

import asyncpg

from mailer.adapters.broker import Broker
from mailer.adapters.queues import queue_depths, queue_names
from mailer.assembly.prepared import retry_tiers
from tests.conftest import StartService
from tests.support.jobs import encode, receipt
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

ADDRESS = "jan.kowalski@example.pl"
TIERS = (0.5, 1.0, 2.0, 4.0)
REFUSED_ATTEMPTS = 5  # the first attempt, then one after each tier; the sixth is accepted
LATE = 1.5  # seconds an attempt may come after its due time, on a busy 2-core machine


async def test_a_4xx_held_through_several_tiers_is_one_message_retried_on_schedule(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
) -> None:
    config["retry"] = {"first_delay": 0.5, "max_delay": 4, "multiplier": 2, "give_up_after": 600}
    service = await start_service(config)
    assert retry_tiers(service.settings) == TIERS
    names = queue_names(round(t * 1000) for t in TIERS)
    smtp_server.rcpt_replies[ADDRESS] = "451 4.3.0 Try again later"

    job = receipt()
    await portal.publish(encode(job), routing_key="receipt", message_id=job["id"])
    started = time.monotonic()

    queued: list[int] = []  # messages of the job queued in all mailer.* queues, per look

    async def count_until_refused_enough() -> None:
        while len(smtp_server.rcpt_log) < REFUSED_ATTEMPTS:
            depths = await queue_depths(portal, names)
            queued.append(sum(depth.ready or 0 for depth in depths))
            await asyncio.sleep(0.05)

    await asyncio.wait_for(count_until_refused_enough(), timeout=sum(TIERS) + 10 * LATE)
    del smtp_server.rcpt_replies[ADDRESS]

    async def sent() -> asyncpg.Record | None:
        row = await db.fetchrow(
            "SELECT status, attempts FROM deliveries WHERE job_id = $1", UUID(job["id"])
        )
        return row if row is not None and row["status"] == "sent" else None

    row = await eventually(sent, timeout=TIERS[-1] + 5 * LATE)
    times = [at - started for address, at in smtp_server.rcpt_log if address == ADDRESS]

    # Figures: most copies queued at one moment (1, against 4, 16, 64 … when a retry went to
    # every delay queue), attempts made against the schedule's, and copies left at the end.
    assert max(queued) == 1, f"copies of one receipt queued at once: {max(queued)} ({queued})"
    assert len(times) == REFUSED_ATTEMPTS + 1, f"attempts {len(times)}, expected 6: {times}"
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    expected = [*TIERS, TIERS[-1]]
    for gap, due in zip(gaps, expected, strict=True):
        assert due <= gap + 0.05 < due + LATE, f"gaps {gaps} against the schedule {expected}"
    assert (row["status"], row["attempts"]) == ("sent", REFUSED_ATTEMPTS + 1)
    assert [r.rcpt_tos for r in smtp_server.received] == [(ADDRESS,)]

    async def all_empty() -> bool:
        return all(depth.ready == 0 for depth in await queue_depths(portal, names))

    await eventually(all_empty, timeout=5)
