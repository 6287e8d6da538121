"""Answers kept for a few seconds and shared: however many operators have the console
open, each costly read runs at most once per interval, and one at a time (a second
caller waits for the first one's answer instead of asking again). Every answer carries
the time it was measured, so a page shown from here still says how old its numbers are."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
LIVE_SECONDS = 2.0  # counts, states, queues: what changes while one looks
SLOW_SECONDS = 15.0  # the per-minute chart, outcomes by domain: costly, and slow to change


class Fresh:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._kept: dict[str, tuple[float, Any]] = {}
        self._pending: dict[str, asyncio.Future[Any]] = {}

    async def get(self, key: str, seconds: float, make: Callable[[], Awaitable[T]]) -> T:
        kept = self._kept.get(key)
        if kept is not None and self._clock() - kept[0] < seconds:
            value: T = kept[1]
            return value
        pending = self._pending.get(key)
        if pending is not None:
            shared: T = await asyncio.shield(pending)
            return shared
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            made = await make()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        else:
            future.set_result(made)
            self._kept[key] = (self._clock(), made)
            if len(self._kept) > 1000:  # issue pages of many issues: forget the oldest
                oldest = min(self._kept, key=lambda k: self._kept[k][0])
                del self._kept[oldest]
            return made
        finally:
            del self._pending[key]

    def forget(self) -> None:
        """After an action: the next page shows its effect."""
        self._kept.clear()
