"""Background loops of a part (the heartbeat, the process report, the sampler): each runs
until `stopping` is set, and ends by itself then."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

GRACE = 2.0  # seconds for the loops to end by themselves at a stop


class Loops:
    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def run(self, loop: Callable[[asyncio.Event], Coroutine[Any, Any, None]], name: str) -> None:
        self._tasks.append(asyncio.create_task(loop(self.stopping), name=name))

    async def end(self) -> None:
        """A moment first, so that a loop in the middle of opening or closing a connection
        is not cut off halfway (which leaves that connection's tasks behind); then the rest
        are cancelled."""
        self.stopping.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=GRACE)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
