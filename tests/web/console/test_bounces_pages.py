"""Bounces and suppressions in the console: real reports sent to the receiver over SMTP, what
the pages show of them, and suppressions added and lifted with every reason, audited."""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
import asyncpg

from mailer.adapters.broker import Broker
from mailer.core.addresses import address_key, address_ref
from mailer.parts.bounces import BounceReception
from tests.conftest import StartService
from tests.support.bounces import arf, bounce_config, dsn, send_report
from tests.support.http import admin_url
from tests.support.newsletters import HASH_KEY, issue, subscribe, until_state
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually
from tests.web.console.conftest import Console, add_operators, log_in

HARD = "jan.kowalski@example.pl"
COMPLAINER = "ola.nowak@example.pl"
QUIET = "ewa@example.pl"


async def _console(
    config: dict[str, Any], start_service: StartService, database_url: str
) -> Console:
    config["admin"]["refresh_seconds"] = 1
    config["bounces"] = bounce_config()
    await add_operators(database_url)
    service = await start_service(config)
    assert service.runs(BounceReception)
    return Console(service, admin_url(service))


async def _classified(db: asyncpg.Connection, count: int) -> None:
    async def probe() -> bool:
        n = await db.fetchval("SELECT count(*) FROM bounce_reports WHERE classified_at IS NOT NULL")
        return bool(n == count)

    await eventually(probe, timeout=15)


async def test_reports_by_kind_issue_rates_and_the_suppression_they_made(
    config: dict[str, Any],
    start_service: StartService,
    database_url: str,
    db: asyncpg.Connection,
    http: aiohttp.ClientSession,
    portal: Broker,
    smtp_server: SmtpServer,
) -> None:
    console = await _console(config, start_service, database_url)
    port = console.service.part(BounceReception).bounces.receiver.port
    await subscribe(
        database_url, [(HARD, "Jan", "pl"), (COMPLAINER, "Ola", "pl"), (QUIET, None, "pl")]
    )
    job = issue()
    await portal.publish(json.dumps(job).encode(), routing_key="newsletter")
    await until_state(db, job["id"], "done")
    (to_hard,) = smtp_server.to(HARD)
    (to_complainer,) = smtp_server.to(COMPLAINER)
    hard = await send_report(port, to_hard.mail_from, dsn(to_hard.mail_from, HARD))
    complaint = await send_report(
        port, to_complainer.mail_from, arf(to_complainer.mail_from, COMPLAINER)
    )
    assert (hard.code, complaint.code) == (250, 250)
    await _classified(db, 2)
    hard_id = int(hard.text.rsplit(" ", 1)[1])

    await log_in(http, console, "victor")
    async with http.get(console.url + "/bounces") as response:
        assert response.status == 200
        page = await response.text()
    assert HARD not in page and COMPLAINER not in page
    assert '<a href="/bounces?kind=hard">hard</a>: 1' in page
    assert '<a href="/bounces?kind=complaint">complaint</a>: 1' in page
    rates = re.search(rf"<tr><td><a href=\"/issues/{job['id']}\">.*?</tr>", page)
    assert rates is not None
    # three deliveries: one bounced, one complaint
    assert "<td>3</td><td>1</td><td>33.33%</td><td>1</td><td>33.33%</td>" in rates.group(0)

    async with http.get(console.url + "/bounces?kind=complaint") as response:
        page = await response.text()
    assert f'<a href="/bounces/{hard_id}">' not in page
    assert "<td>complaint</td>" in page
    async with http.get(console.url + "/api/bounces?kind=hard") as response:
        body = await response.json()
    (shown,) = body["reports"]
    assert (shown["id"], shown["kind"], shown["status"]) == (hard_id, "hard", "5.1.1")
    assert shown["reason"]
    assert shown["evidence"] == 'Diagnostic-Code says "user unknown"'

    async with http.get(f"{console.url}/bounces/{hard_id}") as response:
        page = await response.text()
    assert 'id="report-kind">hard<' in page
    # which field or phrase decided
    assert 'id="report-evidence">Diagnostic-Code says &#34;user unknown&#34;<' in page
    assert "Undelivered Mail Returned to Sender" in page  # the raw report, as received
    assert HARD not in page  # with the address masked
    for bad in ("x", "0", "99999999999999999999", str(hard_id + 100)):
        async with http.get(f"{console.url}/bounces/{bad}") as response:
            assert response.status == 404

    async with http.get(f"{console.url}/issues/{job['id']}") as response:
        page = await response.text()
    assert "1 bounced of 3 (33.33%), 1 complaints (33.33%)" in page

    # the hard bounce's suppression names the report that made it
    csrf = await log_in(http, console, "alice")
    async with http.get(console.url + "/suppressions?reason=hard_bounce") as response:
        page = await response.text()
    ref = address_ref(address_key(HASH_KEY, HARD))
    row = re.search(rf"<tr><td><code>{re.escape(ref)}</code>.*?</tr>", page, re.S)
    assert row is not None
    assert f'<a href="/bounces/{hard_id}">report {hard_id}</a>' in row.group(0)
    assert "for good" in row.group(0)
    async with http.post(
        console.url + "/suppressions",
        data={"csrf": csrf, "address": HARD},
        headers=console.origin,
    ) as response:
        page = await response.text()
    assert re.search(r"hard_bounce since .*, for good; made by <a href=\"/bounces/\d+\">", page)


async def test_every_reason_an_operator_may_add_with_expiry_lifted_and_audited(
    console: Console, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    csrf = await log_in(http, console, "alice")
    async with http.post(
        console.url + "/suppressions", data={"csrf": csrf, "address": HARD}, headers=console.origin
    ) as response:
        page = await response.text()
    offered = re.findall(r'<option value="([a-z_]+)">', page.split('action="/suppressions/add"')[1])
    assert offered == ["manual", "hard_bounce", "complaint", "soft_bounce"]

    key = address_key(HASH_KEY, HARD)
    for reason, days in (
        ("manual", ""),
        ("hard_bounce", ""),
        ("complaint", "30"),
        ("soft_bounce", "7"),
    ):
        async with http.post(
            console.url + "/suppressions/add",
            data={"csrf": csrf, "address": HARD, "reason": reason, "days": days, "confirm": "yes"},
            headers=console.origin,
        ) as response:
            assert response.status == 200, await response.text()
        found = await db.fetchrow(
            "SELECT reason, extract(epoch FROM expires_at - created_at) / 86400 AS days"
            " FROM suppressions WHERE address_key = $1",
            key,
        )
        assert found["reason"] == reason
        assert (round(found["days"]) if found["days"] is not None else "") == (
            int(days) if days else ""
        )
        async with http.get(console.url + "/api/suppressions") as response:
            (listed,) = (await response.json())["suppressions"]
        assert (listed["ref"], listed["reason"]) == (address_ref(key), reason)
        assert (listed["expires_at"] is None) == (not days)
        async with http.post(
            console.url + "/suppressions/lift",
            data={"csrf": csrf, "address": HARD, "confirm": "yes"},
            headers=console.origin,
        ) as response:
            assert response.status == 200
        assert await db.fetchval("SELECT count(*) FROM suppressions") == 0

    for form, message in (
        ({"reason": "erased"}, "reason: one of"),
        ({"reason": "soft_bounce"}, "expires: give days"),
        ({"reason": "manual", "days": "-1"}, "days: a whole number"),
        ({"reason": "manual", "days": "99999"}, "days: a whole number"),
    ):
        async with http.post(
            console.url + "/suppressions/add",
            data={"csrf": csrf, "address": HARD, "confirm": "yes", **form},
            headers=console.origin,
        ) as response:
            assert response.status == 400
            assert message in await response.text()
    assert await db.fetchval("SELECT count(*) FROM suppressions") == 0

    audit = await db.fetch(
        "SELECT action, target, result, detail FROM console_audit"
        " WHERE action LIKE 'suppression %' ORDER BY id"
    )
    assert [(r["action"], r["result"]) for r in audit] == [
        ("suppression add", "done"),
        ("suppression lift", "done"),
    ] * 4
    assert all(r["target"] == address_ref(key) for r in audit)
    assert audit[6]["detail"].startswith("added soft_bounce until ")
