"""The retry schedule of a failing endpoint, over 72 hours of simulated time."""

from __future__ import annotations

import itertools
import random

import pytest

from mailer.core.webhooks.retries import Backoff, gives_up

HOURS_72 = 72 * 3600.0
DEFAULT = Backoff(first=5.0, cap=3600.0)


def schedule(backoff: Backoff, draw: random.Random | float) -> list[float]:
    """The moments (seconds after the first failure) an endpoint that never answers is
    tried again, until the failure that disables it (72 hours)."""
    at, attempt, moments = 0.0, 0, []
    while not gives_up(at, HOURS_72):
        attempt += 1
        fraction = draw.random() if isinstance(draw, random.Random) else draw
        at += backoff.delay(attempt, fraction)
        moments.append(at)
    return moments


def test_the_ceiling_doubles_from_the_first_delay_to_the_cap() -> None:
    windows = [DEFAULT.window(n) for n in range(1, 14)]
    assert [most for _, most in windows] == [
        5,
        10,
        20,
        40,
        80,
        160,
        320,
        640,
        1280,
        2560,
        3600,
        3600,
        3600,
    ]
    assert {least for least, _ in windows} == {5.0}
    assert DEFAULT.window(10_000) == (5.0, 3600.0)


def test_a_dead_endpoint_is_retried_for_72_hours_and_no_faster_than_the_floor() -> None:
    """Retry schedule over 72 h (first=5 s, cap=1 h): the fastest possible (every draw 0)
    is one try each 5 s; the slowest (every draw 1) is 5, 15, 35, … s, then hourly; with
    real draws an endpoint is tried about every half hour once the ceiling is an hour."""
    slowest = schedule(DEFAULT, 1.0)
    assert slowest[:6] == [5, 15, 35, 75, 155, 315]
    assert slowest[-1] >= HOURS_72  # still retried at 72 h: the failure then disables it
    assert slowest[-2] < HOURS_72
    assert len(slowest) == 10 + 71  # 10 doublings (5,115 s), then one an hour to 72 h
    fastest = schedule(DEFAULT, 0.0)
    assert len(fastest) == HOURS_72 / 5  # never more often than the floor
    drawn = schedule(DEFAULT, random.Random(17))
    gaps = [b - a for a, b in itertools.pairwise(drawn)]
    assert drawn[-1] >= HOURS_72 and all(5 <= gap <= 3600 for gap in gaps)
    late = gaps[20:]
    assert 1500 < sum(late) / len(late) < 2100, "about half an hour between tries"
    assert 100 < len(drawn) < 200, f"{len(drawn)} tries in 72 hours"


@pytest.mark.parametrize(("first", "cap"), [(0, 1), (-1, 1), (10, 5)])
def test_a_backoff_is_ordered(first: float, cap: float) -> None:
    with pytest.raises(ValueError, match="first"):
        Backoff(first, cap)


def test_the_draw_and_attempt_are_in_range() -> None:
    with pytest.raises(ValueError, match="draw"):
        DEFAULT.delay(1, 1.5)
    with pytest.raises(ValueError, match="attempts"):
        DEFAULT.window(0)
