"""What a handler tells its consumer to do with the queue message it was given."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Done:
    """Settled: acknowledge the queue message."""


@dataclass(frozen=True, slots=True)
class Later:
    """Not yet: send the queue message round the delay queue of `delay` seconds."""

    delay: float
    attempt: int


Verdict = Done | Later
