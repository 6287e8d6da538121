"""LISTEN/NOTIFY on one dedicated connection: opt-outs, issue state changes, new work.

Notifications are an accelerator, never the only safeguard: consent is also checked in the
database for every chunk, and workers poll for work. When the connection drops it is
re-opened, and `on_reconnect` lets the owner catch up on what it may have missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

import asyncpg

from mailer.adapters.database import UNAVAILABLE

log = logging.getLogger(__name__)
Handler = Callable[[str], None]


class Listener:
    def __init__(
        self, dsn: str, handlers: Mapping[str, Handler], *, on_reconnect: Callable[[], None]
    ) -> None:
        self._dsn = dsn
        self._handlers = dict(handlers)
        self._on_reconnect = on_reconnect
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()

    async def start(self) -> None:
        connection = await self._connect()
        self._task = asyncio.create_task(self._keep(connection), name="listener")

    async def _connect(self) -> asyncpg.Connection:
        connection = await asyncpg.connect(self._dsn, timeout=10)
        connection.add_termination_listener(lambda _: self._lost.set())
        for channel, handler in self._handlers.items():
            await connection.add_listener(channel, _adapt(handler))
        self._lost.clear()
        return connection

    async def _keep(self, connection: asyncpg.Connection) -> None:
        try:
            while True:
                await self._lost.wait()
                log.warning("notification connection lost; reconnecting")
                while True:
                    try:
                        connection = await self._connect()
                        break
                    except (*UNAVAILABLE, asyncpg.PostgresError):
                        await asyncio.sleep(1)
                self._on_reconnect()
        finally:
            with contextlib.suppress(*UNAVAILABLE):
                await connection.close(timeout=2)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _adapt(handler: Handler) -> Callable[[object, int, str, str], None]:
    def receive(connection: object, pid: int, channel: str, payload: str) -> None:
        handler(payload)

    return receive
