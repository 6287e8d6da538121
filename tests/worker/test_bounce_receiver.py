"""The bounce receiver's sessions over real sockets: how many it holds open at once, how long
one may last, and mail to postmaster@, which RFC 5321 says it must accept."""

from __future__ import annotations

import argparse
import asyncio
import io
import time
from typing import Any

import asyncpg

from mailer.adapters.bounces import BounceReports
from mailer.commands.bounces import list_reports, show_report
from tests.conftest import StartService
from tests.support.bounces import BOUNCE_DOMAIN, dsn, send_report
from tests.support.smtp import SmtpServer
from tests.worker.test_bounces import (
    ADDRESS,
    classified,
    delivery,
    port_of,
    sent_receipt,
    start_with_bounces,
    stored_id,
)

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def greeted(port: int, source: str) -> tuple[bytes, Stream]:
    """A connection from `source` (any 127.x.y.z: they are all this machine) and its first
    reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    return await asyncio.wait_for(reader.readline(), 10), (reader, writer)


async def test_sessions_past_the_cap_for_all_sources_together_are_told_421(
    config: dict[str, Any], start_service: StartService
) -> None:
    """12 sources open 10 sessions each (each source's own limit): with the default cap of
    100, 100 are greeted and the other 20 refused (before: all 120 were, and 2,000 in the
    field)."""
    service = await start_with_bounces(config, start_service)
    port = port_of(service)
    opened: list[Stream] = []
    greetings: list[bytes] = []
    try:
        for source in range(2, 14):
            for _ in range(10):
                greeting, stream = await greeted(port, f"127.0.0.{source}")
                greetings.append(greeting)
                opened.append(stream)
        welcomed = sum(one.startswith(b"220 ") for one in greetings)
        refused = [one for one in greetings if not one.startswith(b"220 ")]
        assert (welcomed, len(refused)) == (100, 20), greetings[-25:]
        assert set(refused) == {b"421 4.3.2 Too many connections, try again later\r\n"}
        for _, writer in opened[:1]:  # one leaves: room for one more
            writer.close()
        await asyncio.sleep(0.2)
        greeting, stream = await greeted(port, "127.0.0.99")
        opened.append(stream)
        assert greeting.startswith(b"220 ")
    finally:
        for _, writer in opened:
            writer.close()


async def test_a_session_ends_at_its_lifetime_though_it_sends_noop_and_rset(
    config: dict[str, Any], start_service: StartService
) -> None:
    """NOOP every 0.3 s keeps a session from its idle timeout; the lifetime (2 s here, 300 s by
    default) still ends it: 421, then the connection closes."""
    service = await start_with_bounces(config, start_service, max_session_seconds=2)
    greeting, (reader, writer) = await greeted(port_of(service), "127.0.0.1")
    assert greeting.startswith(b"220 ")
    started = time.monotonic()
    replies: list[bytes] = []
    try:
        while time.monotonic() - started < 6 and not any(b"421" in one for one in replies):
            try:
                writer.write(b"NOOP\r\n" if len(replies) % 2 else b"RSET\r\n")
                await writer.drain()
            except ConnectionError:
                break
            reply = await asyncio.wait_for(reader.readline(), 5)
            if not reply:
                break
            replies.append(reply)
            await asyncio.sleep(0.3)
        replies.extend(line + b"\n" for line in (await reader.read()).split(b"\n") if line)
        lasted = time.monotonic() - started
        assert b"421 4.4.2 Session too long, closing\r\n" in replies, replies
        assert replies.count(b"250 OK\r\n") >= 4, replies  # kept alive until then
        assert 1.5 < lasted < 4, f"the session lasted {lasted:.1f} s"
    finally:
        writer.close()


async def test_postmaster_is_accepted_and_its_mail_kept_for_the_operator(
    config: dict[str, Any],
    start_service: StartService,
    portal: Any,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    """Mail to postmaster@ (RFC 5321 4.5.1: it must be accepted) is stored: a DSN that quotes
    one of our return paths is classified for its delivery like any report; a letter that
    names none is kept with no delivery, changes nothing, and is listed for operators."""
    service = await start_with_bounces(config, start_service)
    port = port_of(service)
    delivery_id, verp = await sent_receipt(portal, db, smtp_server)
    letter = (
        b"From: Someone <someone@example.net>\r\nTo: postmaster@bounces.lucid.example\r\n"
        b"Subject: Your server\r\n\r\nHello, who runs this server?\r\n"
    )
    for rcpt in ("postmaster@" + BOUNCE_DOMAIN, "Postmaster", "POSTMASTER@" + BOUNCE_DOMAIN):
        answer = await send_report(port, rcpt, letter)
        assert answer.code == 250, (rcpt, answer)
    kept = stored_id(answer.text)
    misdirected = await send_report(port, "postmaster@" + BOUNCE_DOMAIN, dsn(verp, ADDRESS))
    assert misdirected.code == 250
    assert (await send_report(port, "postmaster@example.org", letter)).code == 550  # no relay

    report = await classified(db, kept)
    assert report["outcome"] == "nothing: mail to postmaster@ naming no delivery of ours, kept"
    assert await db.fetchval("SELECT delivery_id FROM bounce_reports WHERE id = $1", kept) is None
    bounce = await classified(db, stored_id(misdirected.text))
    assert bounce["kind"] == "hard"
    assert (await delivery(db, delivery_id))["status"] == "bounced"

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        reports = BounceReports(pool)
        out = io.StringIO()
        args = argparse.Namespace(kind=None, delivery=None, limit=50, days=30, report_id=kept)
        assert await list_reports(args, reports, out) == 0
        assert f"{kept:>8}" in out.getvalue() and "delivery -" in out.getvalue()
        out = io.StringIO()
        args.raw = True
        assert await show_report(args, reports, out) == 0
        shown = out.getvalue()
        assert "delivery:    none (mail to postmaster@ naming no delivery)" in shown
        assert "Hello, who runs this server?" in shown
    finally:
        await pool.close()
