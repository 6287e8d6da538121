"""A chunk's outcomes, written to the ledger while the chunk is still sending.

A message the relay accepted but the ledger does not yet show is sent again if the process
dies and another worker takes its rows over. The recorder bounds how many there can be: a
send starts only while fewer than `window` of the chunk's attempts are unrecorded, and a
batch is written each time half the window has filled, so sending goes on meanwhile. A
batch the database cannot take keeps its slots until it is written: a worker cut off from
the database stops sending within the window, instead of sending whole chunks that another
worker will take over and send again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from mailer.core.deliveries import Write

log = logging.getLogger(__name__)
RECORD_WINDOW = 64  # attempts per chunk that may be sent but not yet recorded
FIRST_WAIT = 0.2
MAX_WAIT = 5.0


class Recorder:
    def __init__(
        self,
        record: Callable[[Sequence[Write]], Awaitable[set[int]]],
        window: int = RECORD_WINDOW,
    ) -> None:
        self._record = record
        self._slots = asyncio.Semaphore(window)
        self._batch = max(1, window // 2)
        self._pending: list[Write] = []
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self.recorded: set[int] = set()  # delivery ids the ledger has taken
        # An attempt the ledger refused: another worker took the chunk's rows over (this one
        # was cut off past its lease). The rest of the chunk is theirs now.
        self.claim_lost = False
        self.decided: set[int] = set()  # delivery ids given a write, recorded or not

    async def reserve(self) -> None:
        """Wait for room before handing a message to the relay."""
        await self._slots.acquire()

    def release(self) -> None:
        """The reserved message never reached the relay."""
        self._slots.release()

    def add(self, write: Write, *, reserved: bool) -> None:
        """An outcome to write with the next batch; `reserved` when it took a slot."""
        if reserved and not write.attempted:
            self._slots.release()
        self.decided.add(write.delivery_id)
        self._pending.append(write)
        if len(self._pending) >= self._batch:
            self._start()

    @property
    def owed(self) -> list[int]:
        """Delivery ids whose outcome is known but not yet written."""
        return [w.delivery_id for w in self._pending]

    async def close(self) -> None:
        """Write everything still pending, waiting for the database as long as it takes."""
        self._closing = True
        self._start()
        if self._writer is not None:
            await asyncio.shield(self._writer)

    def _start(self) -> None:
        if self._pending and (self._writer is None or self._writer.done()):
            self._writer = asyncio.create_task(self._write_loop(), name="record-outcomes")

    async def _write_loop(self) -> None:
        wait = FIRST_WAIT
        while self._pending and (self._closing or len(self._pending) >= self._batch):
            batch = list(self._pending)
            try:
                recorded = await self._record(batch)
            except Exception as exc:  # e.g. the database is away: keep the slots, try again
                log.warning(
                    "%d outcomes not recorded yet, trying again in %.1fs: %s",
                    len(batch),
                    wait,
                    exc,
                )
                await asyncio.sleep(wait)
                wait = min(wait * 2, MAX_WAIT)
                continue
            wait = FIRST_WAIT
            del self._pending[: len(batch)]
            self.recorded.update(recorded)
            if any(w.attempted and w.delivery_id not in recorded for w in batch):
                if not self.claim_lost:
                    log.warning("another worker took this chunk over: sending no more of it")
                self.claim_lost = True
            for write in batch:
                if write.attempted:
                    self._slots.release()

    async def abandon(self) -> None:
        """Stop trying (shutdown): what is owed stays owed."""
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
