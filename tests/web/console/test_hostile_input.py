"""Hostile input reaching the console's pages: subjects, replies, parked jobs' headers and
bodies are shown as text, escaped, never as markup; a deep or huge body does not hurt."""

from __future__ import annotations

import aio_pika
import aiohttp
import asyncpg

from mailer.adapters.broker import Broker
from tests.support.jobs import encode
from tests.support.newsletters import issue, until_state
from tests.support.waiting import eventually
from tests.web.console.conftest import Console, log_in

SCRIPT = "<script>alert(1)</script>"
HOSTILE_SUBJECT = f"=?utf-8?q?=0D=0ABcc:_x@evil.example?= {SCRIPT} &amp; more"


async def test_a_hostile_subject_and_reply_are_shown_escaped(
    console: Console, http: aiohttp.ClientSession, db: asyncpg.Connection, portal: Broker
) -> None:
    job = issue(
        subject={"pl": HOSTILE_SUBJECT, "en": HOSTILE_SUBJECT}, send_at="2099-01-01T00:00:00+00:00"
    )
    await portal.publish(encode(job), routing_key="newsletter")
    await until_state(db, job["id"], "scheduled")
    await log_in(http, console, "alice")
    for path in ("/issues", f"/issues/{job['id']}", "/"):
        async with http.get(console.url + path) as response:
            assert response.status == 200, path
            page = await response.text()
        assert SCRIPT not in page, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, path
    async with http.get(f"{console.url}/api/issues/{job['id']}") as response:
        assert (await response.json())["issue"]["subject"] == HOSTILE_SUBJECT  # as data, intact


async def test_hostile_parked_jobs_are_listed_and_inspected_as_text(
    console: Console, http: aiohttp.ClientSession, portal: Broker
) -> None:
    channel = await portal.open_channel()
    bodies = [
        b"[" * 50_000 + b"]" * 50_000,  # deeper than any parser allows
        b'{"kind": "receipt", "note": "' + SCRIPT.encode() + b'", "x": "\xff"}',
        b"y" * 2_000_000,
    ]
    for body in bodies:
        await channel.default_exchange.publish(
            aio_pika.Message(
                body,
                headers={
                    "x-mailer-origin-queue": "mailer.receipts",
                    "x-mailer-reason": f"bad {SCRIPT}\r\nSet-Cookie: x=1",
                },
            ),
            routing_key="mailer.dead",
        )
    await channel.close()
    await log_in(http, console, "alice")

    async def listed() -> list[dict[str, object]] | None:
        async with http.get(console.url + "/api/dead") as response:
            parked = (await response.json())["parked"]
        return parked if len(parked) == 3 else None

    parked = await eventually(listed)
    async with http.get(console.url + "/dead") as response:
        page = await response.text()
    assert SCRIPT not in page
    assert "&lt;script&gt;" in page
    for row in parked:
        async with http.get(f"{console.url}/dead/{row['ref']}") as response:
            assert response.status == 200
            assert "Set-Cookie" not in response.headers
            page = await response.text()
        assert SCRIPT not in page
        assert len(page) < 600_000
