"""Shared short-lived answers: one read per interval however many ask."""

from __future__ import annotations

import asyncio

import pytest

from mailer.web.console.cache import Fresh


async def test_answers_are_kept_for_their_interval_and_shared_while_made() -> None:
    now = [0.0]
    fresh = Fresh(clock=lambda: now[0])
    calls = 0
    gate = asyncio.Event()

    async def make() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return calls

    waiting = [asyncio.create_task(fresh.get("k", 2.0, make)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == [1] * 5  # five callers, one read
    now[0] = 1.9
    assert await fresh.get("k", 2.0, make) == 1
    now[0] = 2.1
    assert await fresh.get("k", 2.0, make) == 2
    fresh.forget()
    assert await fresh.get("k", 2.0, make) == 3


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
