"""This process's unacknowledged deliveries, per queue, written to its `workers` row whenever
they changed (checked every REPORT_INTERVAL), besides with every heartbeat: the console and
/metrics sum them over the processes alive into each queue's unacked count."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from uuid import UUID

from mailer.adapters.workers import Workers
from mailer.errors import TemporaryFailure

log = logging.getLogger(__name__)
REPORT_INTERVAL = 2.0  # seconds


class UnackedReport:
    def __init__(
        self,
        workers: Callable[[], Workers | None],
        worker_id: UUID,
        count: Callable[[], Mapping[str, int]],
        *,
        interval: float = REPORT_INTERVAL,
    ) -> None:
        """`workers`: the process's registration, once it has one; `count`: what it holds."""
        self._workers = workers
        self._worker_id = worker_id
        self._count = count
        self._interval = interval
        self._written: dict[str, int] | None = None

    def now(self) -> dict[str, int]:
        """The counts to send with a heartbeat, which then need no report of their own."""
        self._written = dict(self._count())
        return self._written

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self._interval)
            workers = self._workers()
            counts = dict(self._count())
            if workers is None or counts == self._written or stopping.is_set():
                continue
            try:
                await workers.report_unacked(self._worker_id, counts)
            except TemporaryFailure as exc:
                log.debug("could not report unacked deliveries: %s", exc)
            else:
                self._written = counts
