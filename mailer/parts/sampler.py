"""The sampler as a part: the gauges of /metrics that are measured, not counted
(mailer/sampling.py), every few seconds while the process runs."""

from __future__ import annotations

from mailer.parts import Checks
from mailer.parts.loops import Loops
from mailer.sampling import Sampler


class Sampling:
    name = "sampler"

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self._loops = Loops()

    async def start(self) -> None:
        self._loops.run(self.sampler.run, "sampling")

    async def stop(self) -> None:
        await self._loops.end()

    async def readiness(self) -> Checks:
        return {}
