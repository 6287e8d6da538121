"""A chunk's outcomes, written to the ledger while the chunk is still sending.

A message the relay accepted but the ledger does not yet show is sent again if the process
dies and another worker takes its rows over. The recorder bounds how many there can be: a
send starts only while fewer than `window` of the chunk's attempts are unrecorded, and a
batch is written each time half the window has filled, so sending goes on meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from mailer.adapters.issues import Outcome

log = logging.getLogger(__name__)
RECORD_WINDOW = 64  # attempts per chunk that may be sent but not yet recorded


class Recorder:
    def __init__(
        self,
        record: Callable[[Sequence[Outcome]], Awaitable[None]],
        window: int = RECORD_WINDOW,
    ) -> None:
        self._record = record
        self._slots = asyncio.Semaphore(window)
        self._batch = max(1, window // 2)
        self._pending: list[Outcome] = []
        self._writing = False
        self.recorded: set[int] = set()  # delivery ids already in the ledger

    async def reserve(self) -> None:
        """Wait for room before handing a message to the relay."""
        await self._slots.acquire()

    def release(self) -> None:
        """The reserved message never reached the relay."""
        self._slots.release()

    async def add(self, outcome: Outcome) -> None:
        """The outcome of a reserved message; written with the next batch. Never raises:
        what cannot be written now is left for the end of the chunk."""
        if not outcome.attempted:
            self._slots.release()
            return
        self._pending.append(outcome)
        if self._writing:
            return
        self._writing = True
        try:
            while len(self._pending) >= self._batch:
                batch, self._pending = self._pending, []
                try:
                    await self._record(batch)
                except Exception as exc:  # e.g. the database is away: the chunk's end retries
                    log.warning("outcomes left for the end of the chunk: %s", exc)
                else:
                    self.recorded.update(outcome.delivery_id for outcome in batch)
                for _ in batch:
                    self._slots.release()
        finally:
            self._writing = False
