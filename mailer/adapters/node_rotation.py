"""A connection to a RabbitMQ cluster that moves on to the next node when one fails.

aio-pika's robust connection retries a single URL (aio-pika#141); this one rotates through
every node configured, and pauses longer after each whole round that failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aio_pika import RobustConnection
from yarl import URL

log = logging.getLogger(__name__)


def redact(url: str) -> str:
    """A URL fit for a log line: the password replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class NodeRotatingConnection(RobustConnection):
    """A robust connection to any node of a cluster: every attempt goes to the next URL.

    aio-pika's robust connection retries a single URL (aio-pika#141). Each failed attempt and
    each lost connection passes through `_on_connection_close`, so that is where the URL moves
    on. Within a round of the nodes the next one is tried at once; after a whole round has
    failed the pause doubles from `delay` up to `max_delay`, so a dead cluster is not spun on.
    Channels, queues and consumers declared through this connection come back with it.
    """

    NEXT_NODE_PAUSE = 0.1

    def __init__(
        self, urls: Sequence[str], *, start: int = 0, delay: float, max_delay: float, **kwargs: Any
    ) -> None:
        self._urls = [URL(url) for url in urls]
        self._index = start % len(self._urls)
        self._delay = delay
        self._max_delay = max_delay
        self._failures = 0
        super().__init__(self._urls[self._index], reconnect_interval=delay, **kwargs)

    async def _on_connected(self) -> None:
        again = self.connection_attempt > 0
        await super()._on_connected()
        self._failures = 0
        self.reconnect_interval = self._delay
        log.log(logging.INFO if again else logging.DEBUG, "broker: connected to %s", self)

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        if not (self._close_called or self.is_closed):
            self._move_on(closing)
        await super()._on_connection_close(closing)

    def _move_on(self, closing: asyncio.Future[Any]) -> None:
        was = str(self)
        self._failures += 1
        self._index = (self._index + 1) % len(self._urls)
        self.url = self._urls[self._index]
        if self._failures % len(self._urls):
            self.reconnect_interval = self.NEXT_NODE_PAUSE
        else:
            rounds = self._failures // len(self._urls)
            self.reconnect_interval = min(self._delay * 2 ** (rounds - 1), self._max_delay)
        reason = closing.exception() if closing.done() and not closing.cancelled() else None
        # Before the first connection Broker.connect reports; afterwards this is the news.
        log.log(
            logging.WARNING if self.connection_attempt else logging.DEBUG,
            "broker: connection to %s lost or refused (%s); next attempt to %s in %.1fs",
            was,
            _reason(reason),
            self,
            self.reconnect_interval,
        )


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "closed"
    text = str(exc) or type(exc).__name__
    return text[:200]
