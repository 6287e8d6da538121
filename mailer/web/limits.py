"""Slows down guessing: too many invalid links from one address in a minute get 429.
Valid links are never counted nor refused."""

from __future__ import annotations

import time
from collections import deque


class InvalidAttempts:
    def __init__(self, limit: int, *, window: float = 60.0, max_sources: int = 100_000) -> None:
        self._limit = limit
        self._window = window
        self._max_sources = max_sources
        self._seen: dict[str, deque[float]] = {}

    def _recent(self, source: str, now: float) -> deque[float]:
        attempts = self._seen.get(source)
        if attempts is None:
            if len(self._seen) >= self._max_sources:
                self._forget(now)
            attempts = self._seen[source] = deque()
        while attempts and attempts[0] <= now - self._window:
            attempts.popleft()
        return attempts

    def _forget(self, now: float) -> None:
        self._seen = {
            source: attempts
            for source, attempts in self._seen.items()
            if attempts and attempts[-1] > now - self._window
        }

    def refused(self, source: str) -> bool:
        """Record one invalid attempt; True when this source is over the limit."""
        now = time.monotonic()
        attempts = self._recent(source, now)
        attempts.append(now)
        return len(attempts) > self._limit
