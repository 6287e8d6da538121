"""Cost of the bad-link limiter under a flood of distinct sources, before and after.

    .venv/bin/python -m bench.limiter

Fills the table with 100,000 sources seen within the minute (what 100k IPv6 addresses, or
their /64s, sending one bad link each achieve), then times one more bad link from a new
source, and from a known one; and counts what the table holds after 300,000 sources.
"Before" is the limiter as it was: a dict of deques, rebuilt whenever full.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from collections.abc import Callable

from bench.table import per_call, print_table
from mailer.web.limits import ClientAddresses, InvalidAttempts, Source, source_of

SOURCES = 100_000


class Before:
    """The limiter before: `_forget` scans every source each time a new one arrives full."""

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
        now = time.monotonic()
        attempts = self._recent(source, now)
        attempts.append(now)
        return len(attempts) > self._limit

    def __len__(self) -> int:
        return len(self._seen)


def addresses(first: int, count: int) -> list[str]:
    base = int(ipaddress.ip_address("2001:db8::"))
    return [str(ipaddress.ip_address(base + ((first + n) << 64))) for n in range(count)]


def main() -> None:
    clients = ClientAddresses([ipaddress.ip_network("10.0.0.0/8")])

    def key(address: str) -> Source:
        client = clients.client("10.0.0.1", [address])
        assert client is not None
        return source_of(client)

    filling = addresses(0, SOURCES)
    before, after = Before(20), InvalidAttempts(20)
    for address in filling:
        before.refused(address)
        after.refused(key(address))

    def timed(refuse: Callable[[], object], count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            refuse()
        return (time.perf_counter() - started) / count

    fresh_before = iter(addresses(SOURCES, 200))
    fresh_after = iter([key(a) for a in addresses(2 * SOURCES, 50_000)])
    new_before = timed(lambda: before.refused(next(fresh_before)), 200)
    new_after = timed(lambda: after.refused(next(fresh_after)), 50_000)
    known, known_key = filling[SOURCES // 2], key(filling[SOURCES // 2])
    known_before = per_call(lambda: before.refused(known), seconds=0.5)
    known_after = per_call(lambda: after.refused(known_key), seconds=0.5)
    finding = per_call(lambda: key(known), seconds=0.5)

    held_before, held_after = Before(20), InvalidAttempts(20)
    for address in addresses(10 * SOURCES, 3 * SOURCES):
        held_before._seen[address] = deque([time.monotonic()])  # refused() minus its rescans
        held_after.refused(key(address))

    def us(seconds: float) -> str:
        return f"{seconds * 1e6:,.1f} µs"

    print_table(
        f"bad-link limiter, its table full with {SOURCES:,} sources seen this minute",
        ["", "before", "after"],
        [
            ["a bad link from a new source", us(new_before), us(new_after)],
            ["a bad link from a known source", us(known_before), us(known_after)],
            [
                "sources held after 300,000 distinct",
                f"{len(held_before):,}",
                f"{len(held_after):,}",
            ],
            ["finding the source (trusted XFF, IPv6 /64)", "-", us(finding)],
        ],
    )


if __name__ == "__main__":
    main()
