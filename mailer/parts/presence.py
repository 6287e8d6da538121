"""This worker process in the `workers` table, for operators: registered at start, its row
kept alive with each heartbeat and told what the process holds whenever that changes,
marked stopped at stop. A process whose row falls silent for a lease is shown gone."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from uuid import UUID

from mailer.adapters.workers import Workers
from mailer.build import VERSION
from mailer.errors import TemporaryFailure
from mailer.metrics import Metrics
from mailer.worker.reports import ProcessReport

log = logging.getLogger(__name__)


class Presence:
    def __init__(
        self,
        workers: Workers,
        worker_id: UUID,
        *,
        runs: Sequence[str],
        gone_after: float,
        unacked: Callable[[], Mapping[str, int]],
        relay: Callable[[], Mapping[str, Any]],
        metrics: Metrics,
    ) -> None:
        """`runs`: what the process runs, as operators see it; `unacked` and `relay`: what
        it holds per queue, and what its relay sessions did, reported with its row."""
        self._workers = workers
        self.worker_id = worker_id
        self._runs = list(runs)
        self._gone_after = gone_after
        self._metrics = metrics
        self.report = ProcessReport(lambda: workers, worker_id, unacked, relay)
        self.registered = False

    async def register(self) -> None:
        await self._workers.register(
            self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=VERSION,
            runs=self._runs,
            gone_after=self._gone_after,
        )
        self.registered = True

    async def beat(self) -> None:
        """Operators see the process alive while this goes on."""
        try:
            unacked, relay = self.report.now()
            if not await self._workers.report(
                self.worker_id, unacked=unacked, relay=relay, heartbeat=True
            ):
                await self.register()  # its row was deleted by hand
        except TemporaryFailure as exc:
            log.warning("could not record the worker heartbeat: %s", exc)
        else:
            self._metrics.heartbeat.set_to_current_time()

    async def deregister(self) -> None:
        if self.registered:
            self.registered = False
            with contextlib.suppress(TemporaryFailure):
                await self._workers.deregister(self.worker_id)
