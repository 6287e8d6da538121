"""The embedded capture relay: an in-process SMTP server (aiosmtpd) on loopback that stores
every message it accepts as an `.eml` file, byte for byte as it arrived.

It is what `mailer run` talks to when no `[smtp] url` is configured, so a new user sees
exactly what would go out, DKIM signature included, without a mail server of their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger(__name__)


class _StoreHandler:
    def __init__(self, folder: Path) -> None:
        self._folder = folder

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        name = f"{stamp}-{hashlib.sha256(content).hexdigest()[:12]}.eml"
        await asyncio.to_thread(_write_atomically, self._folder / name, content)
        return f"250 2.0.0 Ok: captured as {name}"


def _write_atomically(path: Path, content: bytes) -> None:
    temporary = path.with_suffix(".part")
    with temporary.open("wb") as handle:
        handle.write(content)
    os.replace(temporary, path)


class CaptureServer:
    """Listens on 127.0.0.1 (an ephemeral port unless one is given)."""

    def __init__(self, folder: Path, *, port: int = 0) -> None:
        self.folder = folder
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        handler = _StoreHandler(self.folder)
        loop = asyncio.get_running_loop()

        def protocol() -> Any:
            return SMTP(handler, hostname="mailer-capture", loop=loop)

        self._server = await loop.create_server(protocol, host="127.0.0.1", port=self._port)
        log.info(
            "capture SMTP server on 127.0.0.1:%d stores messages in %s", self.port, self.folder
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
