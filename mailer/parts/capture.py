"""The embedded capture server as a part: with no relay configured (and `[smtp] capture`
set), what the worker sends is written to files by this server instead of delivered."""

from __future__ import annotations

import logging
from pathlib import Path

from mailer.adapters.capture import CaptureServer
from mailer.config import SmtpRelay
from mailer.parts import Checks

log = logging.getLogger(__name__)


class Capture:
    name = "capture server"

    def __init__(self, folder: Path) -> None:
        self.server = CaptureServer(folder)

    @property
    def relay(self) -> SmtpRelay:
        """The relay settings that reach it, once it has started."""
        return SmtpRelay(
            host="127.0.0.1",
            port=self.server.port,
            implicit_tls=False,
            starttls=False,
            username=None,
            password=None,
        )

    async def start(self) -> None:
        log.warning(
            "no relay: mail is written to %s and recorded as captured, never delivered",
            self.server.folder,
        )
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    async def readiness(self) -> Checks:
        return {}
