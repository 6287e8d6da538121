"""A TCP proxy on loopback that breaks the network between a client and a server, for real.

    proxy = Proxy(upstream_port)      # to 127.0.0.1:upstream_port
    await proxy.start()               # clients connect to 127.0.0.1:proxy.port
    proxy.cut()                       # every open connection is reset; new ones go through
    proxy.stall()                     # bytes are held, both ways, until heal(): a frozen peer
    proxy.blackhole()                 # bytes vanish, both ways, and new connections hang
    proxy.heal()                      # stall over (held bytes flow), blackhole over (new ones
                                      #   go through; the old ones stay silent, as after a
                                      #   real partition)
    await proxy.stop()

It works for any TCP protocol (AMQP, PostgreSQL, SMTP): it never reads what it forwards.
`async with Proxy(port) as proxy:` starts and stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field
from types import TracebackType

PASS, STALL, BLACKHOLE = "pass", "stall", "blackhole"


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    silenced: bool = False  # met a blackhole: never forwards again
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def reset(self) -> None:
        for writer in (self.client, self.server):
            if writer is None:
                continue
            with contextlib.suppress(OSError):
                sock = writer.get_extra_info("socket")
                if sock is not None:  # an RST, not a polite FIN: as a dying host or middlebox
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class Proxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.mode = PASS
        self.accepted = 0  # connections accepted so far
        self._links: set[_Link] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        self._flowing.set()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Proxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def cut(self) -> None:
        """Reset every open connection now; the proxy keeps accepting new ones."""
        for link in list(self._links):
            link.reset()
        self._links.clear()

    def stall(self) -> None:
        """Hold every byte, both ways, on open and new connections, until heal()."""
        self.mode = STALL
        self._flowing.clear()

    def blackhole(self) -> None:
        """Drop every byte, both ways; open connections stay open and silent for good."""
        self.mode = BLACKHOLE
        self._flowing.clear()
        for link in self._links:
            link.silenced = True

    def heal(self) -> None:
        self.mode = PASS
        self._flowing.set()

    @property
    def open_connections(self) -> int:
        return len(self._links)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        link = _Link(writer)
        self._links.add(link)
        try:
            await self._flowing.wait()  # a stalled or blackholed network: the handshake hangs
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            self._links.discard(link)
            link.reset()
            return
        link.server = upstream_writer
        link.tasks = [
            asyncio.create_task(self._pump(link, reader, upstream_writer)),
            asyncio.create_task(self._pump(link, upstream_reader, writer)),
        ]
        await asyncio.gather(*link.tasks, return_exceptions=True)
        self._links.discard(link)
        for end in (writer, upstream_writer):
            end.close()

    async def _pump(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await reader.read(65536):
                if not link.silenced:
                    await self._flowing.wait()  # stalled: held here, so the sender's buffers fill
                if link.silenced:
                    continue  # gone, as a packet into a partition
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if not link.silenced:
                with contextlib.suppress(OSError):
                    writer.write_eof()
