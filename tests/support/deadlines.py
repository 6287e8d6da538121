"""Waiting on a condition that a fault test expects to fail today: a verdict, not a raise,
so the test can go on to measure what the fault cost before it asserts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tests.support.waiting import eventually


async def reached(probe: Callable[[], Awaitable[object]], timeout: float) -> bool:
    """Whether `probe` turned truthy within `timeout` seconds."""
    try:
        await eventually(probe, timeout=timeout)
    except AssertionError:
        return False
    return True
