"""The operators' console as a part: the [admin] listener (the console, its API and
/metrics), with what it alone uses: a small pool of its own, so that its reads never take
the worker's connections; the processes its previews and test sends render in; the relay
of its test sends; and, in `mailer web` alone, a broker connection of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from mailer.adapters.broker import Broker
from mailer.config import AdminSettings
from mailer.parts.database import Database
from mailer.parts.listener import ListenerPart
from mailer.web.console.app import AdminServer


class Closing(Protocol):
    async def close(self) -> None: ...


class BrokerOfItsOwn:
    """A broker connection made on first use (the console of `mailer web` alone reads the
    queues through it), closed with the console."""

    def __init__(self, make: Callable[[], Broker]) -> None:
        self._make = make
        self._made: list[Broker] = []
        self._connecting = asyncio.Lock()

    async def __call__(self) -> Broker:
        async with self._connecting:
            if not self._made:
                broker = self._make()
                await broker.connect()
                self._made.append(broker)
        return self._made[0]

    async def close(self) -> None:
        for broker in self._made:
            await broker.close()
        self._made.clear()


class OperatorsConsole(ListenerPart[AdminServer]):
    name = "operators' console"
    section = "admin"

    def __init__(
        self,
        server: AdminServer,
        settings: AdminSettings,
        *,
        database: Database,
        closing: Sequence[Closing],
    ) -> None:
        """`database`: the console's own pool, which `server` reads through; `closing`:
        what else it alone uses, closed after the listener in this order."""
        super().__init__(server, settings)
        self._database = database
        self._closing = closing

    async def start(self) -> None:
        await self._database.start()
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        for thing in self._closing:
            await thing.close()
        await self._database.stop()
