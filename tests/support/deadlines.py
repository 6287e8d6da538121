"""Waiting on a condition a fault test guarantees: a verdict, not a raise, so that, should
the guarantee ever break, the test still measures what the fault cost and says it in its
assertion."""

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
