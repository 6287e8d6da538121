"""Answers kept for a few seconds and shared: however many operators have the console
open, each costly read runs at most once per interval, one at a time, and off the page's
path: a page asked for after the interval gets the answer kept (if not too old) while a
new one is read in the background. Every answer carries the time it was measured, so a
page shown from here still says how old its numbers are."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
LIVE_SECONDS = 2.0  # counts, states, queues: what changes while one looks
SLOW_SECONDS = 15.0  # the per-minute chart, outcomes by domain: costly, and slow to change
STALE_FACTOR = 5  # an answer older than this many intervals is never shown: the page waits
MAX_KEPT = 1000


class Fresh:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._kept: dict[str, tuple[float, Any]] = {}
        self._pending: dict[str, asyncio.Task[Any]] = {}

    async def get(self, key: str, seconds: float, make: Callable[[], Awaitable[T]]) -> T:
        kept = self._kept.get(key)
        age = self._clock() - kept[0] if kept is not None else None
        if kept is not None and age is not None and age < seconds:
            fresh: T = kept[1]
            return fresh
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(self._make(key, make), name=f"console read {key}")
            task.add_done_callback(_retrieved)
            self._pending[key] = task
        if kept is not None and age is not None and age < seconds * STALE_FACTOR:
            stale: T = kept[1]  # the new answer is on its way; this one says how old it is
            return stale
        made: T = await asyncio.shield(task)
        return made

    async def _make(self, key: str, make: Callable[[], Awaitable[Any]]) -> Any:
        try:
            made = await make()
        except Exception:
            if key in self._kept:  # a background read: the page waiting for it, if any, says why
                log.warning("console: reading %s failed", key, exc_info=True)
            raise
        else:
            self._kept[key] = (self._clock(), made)
            if len(self._kept) > MAX_KEPT:  # pages of many issues: forget the oldest
                del self._kept[min(self._kept, key=lambda k: self._kept[k][0])]
            return made
        finally:
            del self._pending[key]

    def forget(self) -> None:
        """After an action: the next page shows its effect."""
        self._kept.clear()

    async def close(self) -> None:
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _retrieved(task: asyncio.Task[Any]) -> None:
    """A background read that failed with nobody waiting: logged in _make, not left unseen."""
    if not task.cancelled():
        task.exception()
