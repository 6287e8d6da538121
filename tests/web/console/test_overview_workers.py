"""The overview lists the worker processes from the `workers` table: alive, gone, stopped."""

from __future__ import annotations

import json
import os
import re
import uuid

import aiohttp
import asyncpg

from mailer.build import VERSION
from tests.support.waiting import eventually
from tests.web.console.conftest import Console, log_in


def _row(page: str, needle: str) -> str:
    found = re.search(
        r"<tr class=\"presence-[a-z]+\">(?:(?!</tr>).)*" + needle + r".*?</tr>", page, re.S
    )
    assert found is not None, needle
    return found.group(0)


async def test_the_overview_lists_worker_processes_alive_and_gone(
    console: Console, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    silent = uuid.uuid4()
    await db.execute(
        "INSERT INTO workers (id, host, pid, version, runs, started_at, heartbeat_at,"
        " gone_after, unacked, unacked_at)"
        " VALUES ($1, 'mx-<b>old</b>', 424242, '0.9.0', '{worker}', now() - interval '2 hours',"
        " now() - interval '10 minutes', interval '30 seconds', $2::jsonb,"
        " now() - interval '10 minutes')",
        silent,
        json.dumps({"mailer.newsletter": 7}),
    )
    await log_in(http, console, "victor")
    async with http.get(console.url + "/") as response:
        assert response.status == 200
        page = await response.text()
    assert "<h2>Worker processes</h2>" in page
    ours = _row(page, f"<td>{os.getpid()}</td>")
    assert f"<td>{VERSION}</td>" in ours
    assert "<td>worker, web</td>" in ours
    assert ">alive<" in ours
    gone = _row(page, "<td>424242</td>")
    assert "mx-&lt;b&gt;old&lt;/b&gt;" in gone  # escaped, as every field a page shows
    assert ">gone<" in gone
    assert "(10 min ago)" in gone
    assert "mailer.newsletter: 7" in gone
    assert re.search(r"measured \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(by the database", page)

    async with http.get(console.url + "/api/overview") as response:
        body = await response.json()
    presence = {w["pid"]: w["presence"] for w in body["workers"]}
    assert presence[424242] == "gone"
    assert presence[os.getpid()] == "alive"
    assert body["workers_measured_at"]

    await db.execute("UPDATE workers SET stopped_at = now() WHERE id = $1", silent)

    async def stopped() -> bool:
        async with http.get(console.url + "/api/overview") as response:
            body = await response.json()
        return bool({w["pid"]: w["presence"] for w in body["workers"]}[424242] == "stopped")

    await eventually(stopped, interval=0.5)  # the overview is kept for a few seconds
