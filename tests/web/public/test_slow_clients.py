"""Slow and oversized requests over raw sockets: a slowloris is cut off at the read
timeout, while a normal client is served meanwhile; oversized heads are refused."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import asyncpg

from mailer.parts.web import PublicWeb
from mailer.service import Service
from tests.support.http import base_url
from tests.web.conftest import StartWeb, link, status

TIMEOUT = 1.0  # [http] read_timeout in these tests
CUT_OFF_BY = TIMEOUT + 2.0  # the bound each slow client must be disconnected within
# A body gets read_timeout once its head is in, then the answer goes out and aiohttp lingers
# (lingering_time = read_timeout) for the rest of the body before it closes.
BODY_CUT_OFF_BY = 2 * TIMEOUT + 2.0


async def connect(web: Service) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = web.part(PublicWeb).port
    assert port is not None
    return await asyncio.open_connection("127.0.0.1", port)


async def trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """Send one byte at a time until the server hangs up."""
    with contextlib.suppress(ConnectionError):
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every)


async def until_closed(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """Everything the server sent before closing, and how long that took."""
    started = time.monotonic()
    received = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(65536), CUT_OFF_BY + 5):
            received += chunk
    return received, time.monotonic() - started


async def test_slow_headers_are_cut_off_while_others_are_served(start_web: StartWeb) -> None:
    """20 clients trickling their headers are each disconnected within read_timeout, having
    got nothing (not held for the default keep-alive of 3,630 s), while others are served."""
    web = await start_web(read_timeout=TIMEOUT)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200 + b"\r\n\r\n"
    clients = [await connect(web) for _ in range(20)]
    trickles = [asyncio.create_task(trickle(w, head, 0.05)) for _, w in clients]
    served = []
    async with aiohttp.ClientSession() as http:
        for _ in range(5):
            async with http.get(base_url(web) + "/healthz") as response:
                served.append(response.status)
            await asyncio.sleep(0.1)
    results = await asyncio.gather(*(until_closed(r) for r, _ in clients))
    for task in trickles:
        task.cancel()
    for _, writer in clients:
        writer.close()
    assert served == [200] * 5
    for received, took in results:
        assert received == b"", received[:100]  # nothing was answered: the head never ended
        assert took < CUT_OFF_BY, f"a slow client held its socket {took:.1f} s"


async def test_an_idle_connection_is_closed(start_web: StartWeb) -> None:
    web = await start_web(read_timeout=TIMEOUT)
    reader, writer = await connect(web)
    received, took = await until_closed(reader)
    writer.close()
    assert received == b"" and took < CUT_OFF_BY, f"an idle socket stayed {took:.1f} s"


async def test_a_slow_body_gets_408_and_changes_nothing(
    start_web: StartWeb, db: asyncpg.Connection
) -> None:
    web = await start_web(read_timeout=TIMEOUT)
    path = (await link(db, web)).removeprefix(base_url(web))
    body = b"List-Unsubscribe=One-Click"
    reader, writer = await connect(web)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    slow = asyncio.create_task(trickle(writer, body, 0.5))  # 13 s for the whole body
    started = time.monotonic()
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n"), BODY_CUT_OFF_BY)
    answered = time.monotonic() - started
    _, took = await until_closed(reader)
    slow.cancel()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert answered < CUT_OFF_BY, f"a slow body held the handler {answered:.1f} s"
    assert answered + took < BODY_CUT_OFF_BY, f"and its socket {answered + took:.1f} s"
    assert await status(db) == "subscribed"


async def request_head(web: Service, head: bytes) -> bytes:
    reader, writer = await connect(web)
    writer.write(head)
    await writer.drain()
    received, _ = await until_closed(reader)
    writer.close()
    return received


async def test_oversized_heads_are_refused(start_web: StartWeb) -> None:
    web = await start_web(read_timeout=TIMEOUT, max_field_size=1024, max_headers=16)
    refused = {
        "a long header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n",
        "many headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: a\r\n" % n for n in range(40))
        + b"\r\n",
        "a long request line": b"GET /u/" + b"A" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    }
    for what, head in refused.items():
        received = await request_head(web, head)
        assert received[:12] in (b"HTTP/1.1 400", b"HTTP/1.1 431", b"HTTP/1.0 400"), (
            what,
            received[:100],
        )
    fine = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Ok: "
        + b"a" * 900
        + b"\r\nConnection: close\r\n\r\n"
    )
    assert (await request_head(web, fine)).startswith(b"HTTP/1.1 200 ")
