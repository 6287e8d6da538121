"""The console's listener against slow, many and malformed clients over raw sockets: it has
the public listener's limits (one implementation, mailer/web/listener.py)."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import aiohttp
import asyncpg
import pytest

from tests.support.http import base_url
from tests.web.console.conftest import PASSWORD, StartConsole
from tests.web.public.test_slow_clients import BODY_CUT_OFF_BY, CUT_OFF_BY, TIMEOUT, until_closed


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def same_origin(console_url: str) -> bytes:
    """Host and Origin as a browser on the console sends them (else 403 before any body)."""
    host = console_url.removeprefix("http://")
    return f"Host: {host}\r\nOrigin: {console_url}\r\n".encode()


async def test_a_login_whose_body_never_ends_gets_408_and_is_closed(
    start_console: StartConsole, db: asyncpg.Connection
) -> None:
    """A POST /login promising 100 bytes and sending 6 held its socket past 95 s; now it is
    answered 408 within read_timeout and closed, and nobody was checked or logged in."""
    console = await start_console(run_worker=False, http={"read_timeout": TIMEOUT})
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(console.url))
    writer.write(
        b"POST /login HTTP/1.1\r\n" + same_origin(console.url) + b"Content-Type: "
        b"application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nname=a"
    )
    await writer.drain()
    started = time.monotonic()
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n"), BODY_CUT_OFF_BY)
    answered = time.monotonic() - started
    _, took = await until_closed(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert answered < CUT_OFF_BY, f"the slow body held the handler {answered:.1f} s"
    assert answered + took < BODY_CUT_OFF_BY, f"and its socket {answered + took:.1f} s"
    assert await db.fetchval("SELECT count(*) FROM console_audit") == 0


async def test_a_slow_body_does_not_hold_the_others(start_console: StartConsole) -> None:
    console = await start_console(run_worker=False, http={"read_timeout": TIMEOUT})
    slow = []
    for _ in range(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(console.url))
        writer.write(
            b"POST /login HTTP/1.1\r\n" + same_origin(console.url) + b"Content-Type: "
            b"application/x-www-form-urlencoded\r\nContent-Length: 5000\r\n\r\nname="
        )
        slow.append((reader, writer))
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            console.url + "/login",
            data={"name": "alice", "password": PASSWORD},
            headers={"Origin": console.url},
            allow_redirects=False,
        ) as response,
    ):
        assert response.status == 303
    answers = await asyncio.wait_for(
        asyncio.gather(*(reader.read(12) for reader, _ in slow)), BODY_CUT_OFF_BY
    )
    for _, writer in slow:
        writer.close()
    assert answers == [b"HTTP/1.1 408"] * 10


async def test_connections_beyond_the_cap_are_answered_503_and_closed(
    start_console: StartConsole,
) -> None:
    """Before, any number of connections were taken (each holding a descriptor for up to
    read_timeout); now the 21st of [http] max_connections = 20 is answered at once."""
    console = await start_console(
        run_worker=False, http={"read_timeout": 5.0, "max_connections": 20}
    )
    held = []
    for _ in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(console.url))
        writer.write(b"GET /login HTTP/1.1\r\nHost: x\r\n")  # a head not finished yet
        await writer.drain()
        held.append((reader, writer))
    await asyncio.sleep(0.2)  # all 20 taken in
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(console.url))
    refused, took = await until_closed(reader)
    writer.close()
    assert refused.startswith(b"HTTP/1.1 503 "), refused
    assert b"too many connections" in refused
    assert took < 1.0, f"the refusal took {took:.1f} s"
    for _, held_writer in held[:5]:
        held_writer.close()
    await asyncio.sleep(0.2)
    async with aiohttp.ClientSession() as http, http.get(console.url + "/login") as response:
        assert response.status == 200  # room again once some closed
    for _, held_writer in held[5:]:
        held_writer.close()
    assert time.monotonic() - started < CUT_OFF_BY + 5


HOSTILE_LINES = {
    "long": b"GET /u/" + b"A" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "forging": b"GET /"
    + b"A" * 4100
    + b"\r2026-01-01T00:00:00.000Z ERROR mailer FORGED\n"
    + b"\x85FORGED\xe2\x80\xa8FORGED HTTP/1.1\r\n\r\n",
    "bare CR": b"GET /a\r2026-01-01T00:00:00.000Z ERROR mailer FORGED HTTP/1.1\r\n\r\n",
    "not http": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03FORGED\r\n\r\n",
}


@pytest.mark.parametrize("listener", ["public", "console"])
async def test_a_request_line_no_one_could_parse_is_one_fixed_log_line(
    start_console: StartConsole, caplog: pytest.LogCaptureFixture, listener: str
) -> None:
    """Before: a full traceback for each, repeating what the client sent (bytes of its
    choosing in the log); now one fixed line, nothing of the request in it."""
    console = await start_console(run_worker=False)
    url = base_url(console.service) if listener == "public" else console.url
    caplog.set_level(logging.DEBUG)
    for what, head in HOSTILE_LINES.items():
        caplog.clear()
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
        writer.write(head)
        await writer.drain()
        received, _ = await until_closed(reader)
        writer.close()
        await asyncio.sleep(0.1)
        assert received.startswith(b"HTTP/1.") and b" 400 " in received[:13], (what, received)
        about = [r for r in caplog.records if r.name in ("aiohttp.server", "mailer.web.listener")]
        assert len(about) == 1, (what, [r.getMessage()[:200] for r in about])
        record = about[0]
        assert record.exc_info is None and record.exc_text is None, what
        assert record.levelno == logging.INFO
        message = record.getMessage()
        name = "HTTP service" if listener == "public" else "operators' console"
        assert re.fullmatch(
            rf"{name}: a request that could not be read was refused \(\w+, HTTP 400\)", message
        ), message
        for record in caplog.records:
            text = caplog.handler.format(record)
            assert "FORGED" not in text and "AAAA" not in text, (what, text[:300])
            assert "\n" not in record.getMessage() and "Traceback" not in text, what
