"""What this process holds unacknowledged per queue, and what its relay sessions did, written
to its `workers` row whenever either changed (checked every REPORT_INTERVAL), besides with
every heartbeat: the console and /metrics sum the unacked counts over the processes alive
into each queue's, and show the relay as every worker process sees it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any
from uuid import UUID

from mailer.adapters.workers import Workers
from mailer.errors import TemporaryFailure

log = logging.getLogger(__name__)
REPORT_INTERVAL = 2.0  # seconds


class ProcessReport:
    def __init__(
        self,
        workers: Callable[[], Workers | None],
        worker_id: UUID,
        unacked: Callable[[], Mapping[str, int]],
        relay: Callable[[], Mapping[str, Any] | None],
        *,
        interval: float = REPORT_INTERVAL,
    ) -> None:
        """`workers`: the process's registration, once it has one; `unacked`: what it
        holds; `relay`: its relay's report (None: it runs no worker)."""
        self._workers = workers
        self._worker_id = worker_id
        self._unacked = unacked
        self._relay = relay
        self._interval = interval
        self._written: tuple[dict[str, int], dict[str, Any] | None] | None = None

    def now(self) -> tuple[dict[str, int], dict[str, Any] | None]:
        """What to send with a heartbeat, which then needs no report of its own."""
        relay = self._relay()
        self._written = dict(self._unacked()), None if relay is None else dict(relay)
        return self._written

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self._interval)
            workers = self._workers()
            relay = self._relay()
            state = dict(self._unacked()), None if relay is None else dict(relay)
            if workers is None or state == self._written or stopping.is_set():
                continue
            unacked, relay_now = state
            written = self._written
            try:
                await workers.report(
                    self._worker_id,
                    unacked=unacked if written is None or written[0] != unacked else None,
                    relay=relay_now if written is None or written[1] != relay_now else None,
                )
            except TemporaryFailure as exc:
                log.debug("could not report the worker's state: %s", exc)
            else:
                self._written = state
