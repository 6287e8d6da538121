"""Shared short-lived answers: one read per interval however many ask, off the page's path."""

from __future__ import annotations

import asyncio

import pytest

from mailer.web.console.cache import Fresh


class Reads:
    def __init__(self) -> None:
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def make(self) -> int:
        self.calls += 1
        await self.gate.wait()
        return self.calls


async def test_one_read_for_many_callers_and_kept_for_its_interval() -> None:
    now = [0.0]
    fresh, reads = Fresh(clock=lambda: now[0]), Reads()
    reads.gate.clear()
    waiting = [asyncio.create_task(fresh.get("k", 2.0, reads.make)) for _ in range(5)]
    await asyncio.sleep(0)
    reads.gate.set()
    assert await asyncio.gather(*waiting) == [1] * 5  # five callers, one read
    now[0] = 1.9
    assert await fresh.get("k", 2.0, reads.make) == 1
    assert reads.calls == 1


async def test_a_stale_answer_is_shown_while_the_next_is_read() -> None:
    now = [0.0]
    fresh, reads = Fresh(clock=lambda: now[0]), Reads()
    assert await fresh.get("k", 2.0, reads.make) == 1
    now[0] = 3.0
    reads.gate.clear()
    assert await fresh.get("k", 2.0, reads.make) == 1  # at once, not waiting for the read
    assert await fresh.get("k", 2.0, reads.make) == 1
    reads.gate.set()
    await asyncio.sleep(0.01)
    assert reads.calls == 2  # one background read for both
    assert await fresh.get("k", 2.0, reads.make) == 2
    now[0] = 100.0  # far too old to show: the page waits for a new one
    assert await fresh.get("k", 2.0, reads.make) == 3
    fresh.forget()
    assert await fresh.get("k", 2.0, reads.make) == 4
    await fresh.close()


async def test_a_failure_is_not_kept() -> None:
    fresh = Fresh()
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("database away")
        return "ok"

    with pytest.raises(ConnectionError):
        await fresh.get("k", 60.0, flaky)
    assert await fresh.get("k", 60.0, flaky) == "ok"
