"""The public listener as a part: the recipients' pages, /healthz and /readyz."""

from __future__ import annotations

from mailer.config import HttpSettings
from mailer.listening import listening
from mailer.parts import Checks
from mailer.web.public.app import WebServer


class PublicWeb:
    name = "public web"

    def __init__(self, server: WebServer, settings: HttpSettings) -> None:
        self.server = server
        self._settings = settings

    @property
    def port(self) -> int | None:
        return self.server.port

    async def start(self) -> None:
        with listening("http", self._settings.host, self._settings.port):
            await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    async def readiness(self) -> Checks:
        return {}
