"""The bounce receiver and its classifiers ([bounces]) as a part; whether the receiver
listens is reported to /readyz."""

from __future__ import annotations

from mailer.parts import Checks
from mailer.worker.bounces import BounceService


class BounceReception:
    name = "bounce receiver"

    def __init__(self, bounces: BounceService) -> None:
        self.bounces = bounces

    async def start(self) -> None:
        await self.bounces.start()

    async def stop(self) -> None:
        await self.bounces.stop()

    async def readiness(self) -> Checks:
        return {"bounces": self.bounces.readiness()}
