"""The worker's broker connection as a part: connected and its topology declared at start,
closed at stop (after the worker has drained); the node it is connected to reported to
/readyz. The console and the sampler of the same process read the queues through it."""

from __future__ import annotations

from collections.abc import Sequence

from mailer.adapters.broker import Broker
from mailer.parts import Checks


class BrokerConnection:
    name = "broker"

    def __init__(self, broker: Broker, *, delays: Sequence[float]) -> None:
        """`delays`: the retry tiers in seconds, one delay queue each."""
        self.broker = broker
        self._delays_ms = [round(delay * 1000) for delay in delays]

    async def start(self) -> None:
        await self.broker.connect()
        await self.broker.declare(self._delays_ms)

    async def stop(self) -> None:
        await self.broker.close()

    async def readiness(self) -> Checks:
        node = self.broker.node
        detail = f"connected to {node}" if node else "not connected"
        return {"broker": {"ok": node is not None, "detail": detail}}
