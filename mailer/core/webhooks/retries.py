"""When a failing endpoint is tried again: exponential backoff with full jitter.

Attempt n (1 after the first failure) waits a random time in `[first, ceiling(n)]`, where
the ceiling doubles from `first` up to `cap`: with the defaults (5 s, 1 h) the ceiling
reaches an hour at the 11th failure, and an endpoint that stays down is tried about every
half hour on average. Spreading each wait over its whole range (full jitter) keeps many
endpoints that failed together from coming back together; the floor at `first` keeps a
dead endpoint from being hammered by a draw near zero.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_DOUBLINGS = 60  # 2**60 times any first delay is past any cap


@dataclass(frozen=True, slots=True)
class Backoff:
    first: float  # seconds: the least wait, and the first ceiling
    cap: float  # seconds: the highest ceiling

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap:
            raise ValueError("a backoff needs 0 < first <= cap")

    def window(self, attempt: int) -> tuple[float, float]:
        """The (least, most) seconds the `attempt`-th retry waits; attempt counts from 1."""
        if attempt < 1:
            raise ValueError("attempts count from 1")
        ceiling = min(self.cap, self.first * 2 ** min(attempt - 1, MAX_DOUBLINGS))
        return self.first, ceiling

    def delay(self, attempt: int, draw: float) -> float:
        """The wait for `draw`, a uniform random number in [0, 1)."""
        if not 0 <= draw <= 1:
            raise ValueError("draw is in [0, 1]")
        least, most = self.window(attempt)
        return least + (most - least) * draw


def gives_up(failing_for: float, disable_after: float) -> bool:
    """Whether an endpoint failing for `failing_for` seconds without one success is
    disabled at this failure: retries go on for `disable_after` at least."""
    return failing_for >= disable_after
