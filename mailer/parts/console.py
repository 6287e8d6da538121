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
from mailer.listening import listening
from mailer.parts import Checks
from mailer.parts.database import Database
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


class OperatorsConsole:
    name = "operators' console"

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
        self.server = server
        self._settings = settings
        self._database = database
        self._closing = closing

    @property
    def port(self) -> int | None:
        return self.server.port

    async def start(self) -> None:
        await self._database.start()
        with listening("admin", self._settings.host, self._settings.port):
            await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()
        for thing in self._closing:
            await thing.close()
        await self._database.stop()

    async def readiness(self) -> Checks:
        return {}
