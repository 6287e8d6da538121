"""Parts: every piece of a mailer process that starts and stops, behind one small protocol.

A part starts (opens what it needs), stops (lets go of it, its work drained first), and says
what it reports to /readyz. Each lives in a module of its own here; `mailer/assembly` builds
them from the settings, and `mailer/service.py` starts them in order and stops them in
reverse. A part that does not run in a process is not built there at all.

A part that takes work (the worker) drains too: at a stop, every such part is drained
before any part stops, so that the work in hand finishes while the other parts (the pool,
the broker, /readyz answering "not ready") still run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, runtime_checkable

Checks = dict[str, dict[str, object]]  # check name → {"ok": bool, "detail": str, ...}
Readiness = Callable[[], Awaitable[Checks]]


class Part(Protocol):
    @property
    def name(self) -> str:
        """What logs call it."""
        ...

    async def start(self) -> None:
        """Ready to work when it returns; a part that fails to start is stopped."""
        ...

    async def stop(self) -> None:
        """Drain and let go; safe after a start that failed halfway."""
        ...

    async def readiness(self) -> Checks:
        """Its checks for /readyz; none for most parts."""
        ...


@runtime_checkable
class Draining(Protocol):
    async def drain(self) -> None:
        """Take no more work and finish what is in hand; safe to call more than once."""
        ...


def readiness_of(parts: Iterable[Part]) -> Readiness:
    """The checks of `parts` together, asked each time /readyz is."""
    listed = list(parts)

    async def checks() -> Checks:
        found: Checks = {}
        for part in listed:
            found.update(await part.readiness())
        return found

    return checks
