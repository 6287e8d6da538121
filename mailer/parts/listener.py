"""What a part that is one HTTP listener does: starts its server where its settings say (one
clear error when it cannot bind there), knows the port it got, and stops it."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from mailer.listening import listening
from mailer.parts import Checks


class Server(Protocol):
    @property
    def port(self) -> int | None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Address(Protocol):
    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


ServerT = TypeVar("ServerT", bound=Server)


class ListenerPart(Generic[ServerT]):
    """`section`: the settings section whose host and port it listens on ("http")."""

    name: str
    section: str

    def __init__(self, server: ServerT, settings: Address) -> None:
        self.server = server
        self._settings = settings

    @property
    def port(self) -> int | None:
        return self.server.port

    async def start(self) -> None:
        with listening(self.section, self._settings.host, self._settings.port):
            await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    async def readiness(self) -> Checks:
        return {}
