"""What operators do from the console, over HTTP against the running services: pause and
resume an issue, requeue and purge parked jobs, look up receipts and suppressions."""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aiohttp
import asyncpg

from mailer.adapters.broker import Broker
from mailer.core.addresses import address_key
from mailer.parts.worker import WorkerRuntime
from tests.conftest import StartService
from tests.support.http import admin_url
from tests.support.jobs import encode, receipt
from tests.support.newsletters import HASH_KEY, issue, people, subscribe, until_state
from tests.support.smtp import Received, SmtpServer
from tests.support.waiting import eventually
from tests.web.console.conftest import Console, add_operators, log_in


def arrived(smtp: SmtpServer, address: str) -> Callable[[], Awaitable[list[Received]]]:
    async def probe() -> list[Received]:
        return smtp.to(address)

    return probe


async def _sent(db: asyncpg.Connection, issue_id: str) -> int:
    n: int = await db.fetchval(
        "SELECT count(*) FROM deliveries WHERE job_id = $1 AND status = 'sent'",
        uuid.UUID(issue_id),
    )
    return n


async def test_an_operator_pauses_and_resumes_an_issue_a_viewer_cannot(
    console: Console,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    database_url: str,
    portal: Broker,
    smtp_server: SmtpServer,
) -> None:
    await subscribe(database_url, people(300))
    job = issue()
    await portal.publish(encode(job), routing_key="newsletter")
    await until_state(db, job["id"], "sending")
    await eventually(lambda: _sent(db, job["id"]))

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as viewer:
        viewer_csrf = await log_in(viewer, console, "victor")
        async with viewer.get(f"{console.url}/api/issues/{job['id']}") as response:
            assert response.status == 200
            seen = await response.json()
        assert seen["issue"]["state"] == "sending"
        assert seen["issue"]["total"] == 300
        assert re.fullmatch(r"rate [\d,.]+/s over the last (minute|\d+ s), ETA .+", seen["rate"])
        assert seen["estimate"]["eta"] > 0
        async with viewer.post(
            f"{console.url}/api/issues/{job['id']}/pause",
            headers={**console.origin, "X-CSRF-Token": viewer_csrf},
        ) as response:
            assert response.status == 403
    assert await db.fetchval("SELECT state FROM issues WHERE id = $1", uuid.UUID(job["id"])) == (
        "sending"
    )

    csrf = await log_in(http, console, "alice")
    async with http.post(
        f"{console.url}/api/issues/{job['id']}/pause",
        headers={**console.origin, "X-CSRF-Token": csrf},
    ) as response:
        assert response.status == 200
        assert (await response.json())["result"] == "sending → paused"
    settled = len(smtp_server.received)
    await until_state(db, job["id"], "paused")

    async def quiet() -> int | None:
        before = len(smtp_server.received)
        await asyncio.sleep(1.0)
        return before if len(smtp_server.received) == before else None

    stopped_at = await eventually(quiet, timeout=10)
    assert stopped_at < 300  # sending stopped before the end
    assert stopped_at >= settled
    async with http.get(f"{console.url}/issues/{job['id']}") as response:
        page = await response.text()
    assert 'id="issue-state" class="state-paused">paused<' in page
    assert "Resume…" in page

    async with http.post(
        f"{console.url}/api/issues/{job['id']}/resume",
        headers={**console.origin, "X-CSRF-Token": csrf},
    ) as response:
        assert response.status == 200
    await until_state(db, job["id"], "done", timeout=60)
    assert len({r.rcpt_tos[0] for r in smtp_server.received}) == 300
    audit = await db.fetch(
        "SELECT operator, action, result FROM console_audit WHERE action LIKE 'issue %' ORDER BY id"
    )
    assert [tuple(r) for r in audit] == [
        ("victor", "issue pause", "refused"),
        ("alice", "issue pause", "done"),
        ("alice", "issue resume", "done"),
    ]


async def test_requeue_a_parked_job_and_it_is_delivered(
    console: Console,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    portal: Broker,
    smtp_server: SmtpServer,
) -> None:
    csrf = await log_in(http, console, "alice")
    good = receipt()
    body = encode(good)
    # parked as the worker parks: headers naming the origin queue and the reason
    channel = await portal.open_channel()
    await channel.default_exchange.publish(
        aio_pika.Message(
            body,
            message_id=good["id"],
            headers={
                "x-mailer-origin-queue": "mailer.receipts",
                "x-mailer-reason": "relay refused: test",
                "x-mailer-parked-at": "2026-12-02T03:00:00+00:00",
            },
        ),
        routing_key="mailer.dead",
    )
    junk = b'{"kind": "receipt", "to": {"email": "x@example.pl"}}'
    await channel.default_exchange.publish(
        aio_pika.Message(
            junk,
            headers={"x-mailer-origin-queue": "mailer.receipts", "x-mailer-reason": "invalid job"},
        ),
        routing_key="mailer.dead",
    )
    await channel.close()

    async def listed() -> list[dict[str, object]] | None:
        async with http.get(console.url + "/api/dead") as response:
            parked = (await response.json())["parked"]
        return parked if len(parked) == 2 else None

    parked = await eventually(listed)
    by_job = {p["job_id"]: p for p in parked}
    assert by_job[good["id"]]["origin"] == "mailer.receipts"
    assert by_job[good["id"]]["reason"] == "relay refused: test"
    ref = by_job[good["id"]]["ref"]
    async with http.get(f"{console.url}/dead/{ref}") as response:
        page = await response.text()
    assert "jan.kowalski@example.pl" not in page  # addresses masked
    assert "j***i@e***e.pl" in page
    async with http.post(
        console.url + "/api/dead/requeue",
        json={"refs": [ref]},
        headers={**console.origin, "X-CSRF-Token": csrf},
    ) as response:
        assert response.status == 200
        lines = [json.loads(line) for line in (await response.text()).splitlines()]
    assert lines[0]["done"] is True
    assert lines[-1]["done"] == 1
    await eventually(arrived(smtp_server, good["to"]["email"]), timeout=30)
    async with http.get(console.url + "/api/dead") as response:
        left = (await response.json())["parked"]
    assert len(left) == 1
    assert left[0]["reason"] == "invalid job"
    async with http.post(
        console.url + "/api/dead/purge",
        json={"all": True},
        headers={**console.origin, "X-CSRF-Token": csrf},
    ) as response:
        assert (await response.text()).splitlines()[-1].startswith('{"done": 1')
    async with http.get(console.url + "/api/dead") as response:
        assert (await response.json())["parked"] == []
    audit = await db.fetch(
        "SELECT action, result, detail FROM console_audit WHERE action LIKE 'dead %' ORDER BY id"
    )
    assert [(r["action"], r["result"]) for r in audit] == [
        ("dead requeue", "done"),
        ("dead purge", "done"),
    ]


async def test_receipt_and_suppression_lookups_by_typed_address(
    console: Console,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    portal: Broker,
    smtp_server: SmtpServer,
) -> None:
    csrf = await log_in(http, console, "alice")
    job = receipt()
    address = job["to"]["email"]
    await portal.publish(encode(job), routing_key="receipt")
    await eventually(arrived(smtp_server, address))

    async def recorded() -> list[object] | None:
        async with http.get(f"{console.url}/api/receipts?job={job['id']}") as response:
            found = (await response.json())["receipts"]
        return found if found and found[0]["status"] == "sent" else None

    await eventually(recorded)
    async with http.post(
        console.url + "/receipts",
        data={"csrf": csrf, "address": address.upper()},
        headers=console.origin,
    ) as response:
        page = await response.text()
    assert job["id"] in page
    assert address not in page and address.upper() not in page  # never echoed back

    async with http.post(
        console.url + "/suppressions/add",
        data={"csrf": csrf, "address": address, "reason": "complaint", "confirm": "yes"},
        headers=console.origin,
    ) as response:
        assert response.status == 200
    key = address_key(HASH_KEY, address)
    assert await db.fetchval("SELECT reason FROM suppressions WHERE address_key = $1", key) == (
        "complaint"
    )
    async with http.post(
        console.url + "/suppressions",
        data={"csrf": csrf, "address": address},
        headers=console.origin,
    ) as response:
        assert "complaint since" in await response.text()
    async with http.post(
        console.url + "/suppressions/lift",
        data={"csrf": csrf, "address": address, "confirm": "yes"},
        headers=console.origin,
    ) as response:
        assert response.status == 200
    assert await db.fetchval("SELECT count(*) FROM suppressions") == 0
    targets = await db.fetch("SELECT target FROM console_audit WHERE action LIKE 'supp%'")
    assert all(address not in (r["target"] or "") for r in targets)
    assert len(targets) == 2


async def test_a_retrying_receipt_shows_its_next_attempt(
    console: Console,
    http: aiohttp.ClientSession,
    portal: Broker,
    smtp_server: SmtpServer,
) -> None:
    job = receipt()
    smtp_server.rcpt_replies[job["to"]["email"]] = "451 4.7.1 greylisted, try again later"
    await log_in(http, console, "victor")
    await portal.publish(encode(job), routing_key="receipt")

    async def retrying() -> list[dict[str, object]] | None:
        async with http.get(console.url + "/api/receipts") as response:
            found = [r for r in (await response.json())["retrying"] if r["job_id"] == job["id"]]
        return found or None

    (row,) = await eventually(retrying)
    assert row["status"] == "retrying"
    assert row["next_attempt"] is not None
    assert "451 4.7.1 greylisted" in str(row["reply"])
    async with http.get(console.url + "/receipts") as response:
        page = await response.text()
    assert job["id"] in page
    assert "greylisted" in page


async def test_the_overview_shows_the_relay_refusing_us_with_its_reply(
    console: Console,
    http: aiohttp.ClientSession,
    portal: Broker,
    smtp_server: SmtpServer,
) -> None:
    smtp_server.mail_reply = "553 5.7.1 sender address rejected: not owned by you"
    await log_in(http, console, "victor")
    await portal.publish(encode(receipt()), routing_key="receipt")

    async def refused() -> str | None:
        async with http.get(console.url + "/") as response:
            page = await response.text()
        return page if "sender address rejected" in page else None

    page = await eventually(refused, timeout=30)
    assert "last failure 20" in page  # when, as well as what
    shown = re.search(r'id="relay-failures"[^>]*>(.*?)</td>', page)
    assert shown is not None
    assert re.search(r"sender: [1-9]", shown.group(1))  # 553 to MAIL FROM: our sender refused
    assert "auth: 0" in shown.group(1)


async def test_an_issue_nobody_sends_shows_as_stalled_not_with_a_stale_rate(
    config: dict[str, Any],
    start_service: StartService,
    database_url: str,
    db: asyncpg.Connection,
    http: aiohttp.ClientSession,
) -> None:
    """No worker runs: the ledger says an issue is sending, its last outcome 3 minutes ago."""
    await subscribe(database_url, people(3))
    issue_id = uuid.uuid4()
    await db.execute("INSERT INTO jobs (id, kind, digest) VALUES ($1, 'newsletter', 'x')", issue_id)
    await db.execute(
        "INSERT INTO issues (id, list_id, payload, state, send_at, total, started_at)"
        " SELECT $1, id, $2::jsonb, 'sending', now() - interval '5 minutes', 3,"
        " now() - interval '5 minutes' FROM lists WHERE slug = 'lucid-news'",
        issue_id,
        json.dumps(issue(id=str(issue_id))),
    )
    await db.execute(
        "INSERT INTO deliveries (job_id, recipient_key, subscriber_id, status, updated_at)"
        " SELECT $1, address_key, id, CASE WHEN id = (SELECT min(id) FROM subscribers)"
        " THEN 'sent' ELSE 'pending' END, now() - interval '3 minutes' FROM subscribers",
        issue_id,
    )
    await add_operators(database_url)
    service = await start_service(config, run_worker=False)
    console = Console(service, admin_url(service))
    await log_in(http, console, "victor")
    async with http.get(f"{console.url}/issues/{issue_id}") as response:
        page = await response.text()
    # the words of `mailer issue status`
    assert "stalled: no worker process is alive; the last send was 3 min" in page
    assert "/s over the last" not in page
    async with http.get(f"{console.url}/api/issues/{issue_id}") as response:
        body = await response.json()
    assert body["stalled"].startswith("stalled: no worker process is alive")
    assert body["estimate"]["rate"] is None and body["estimate"]["eta"] is None
    assert body["issue"]["counts"] == {"sent": 1, "pending": 2}

    # a worker process alive that sends nothing of it: still stalled, and said why
    await db.execute(
        "INSERT INTO workers (id, host, pid, version, runs, gone_after)"
        " VALUES ($1, 'mx1', 1, '1', '{worker}', interval '1 hour')",
        uuid.uuid4(),
    )

    for path in (f"/issues/{issue_id}", "/", "/issues"):

        async def says_no_send(path: str = path) -> str | None:
            async with http.get(console.url + path) as response:
                page = await response.text()
            return page if "stalled: no worker has sent anything for 3 min" in page else None

        await eventually(says_no_send, interval=0.5)  # pages are kept for a few seconds


async def test_a_console_without_the_worker_shows_the_relay_as_the_worker_processes_report_it(
    config: dict[str, Any],
    start_service: StartService,
    database_url: str,
    db: asyncpg.Connection,
    portal: Broker,
    smtp_server: SmtpServer,
    http: aiohttp.ClientSession,
) -> None:
    """`mailer web` and `mailer worker` apart: the worker's relay refusals reach the console
    through the `workers` table; a gone process's old report counts for nothing."""
    await add_operators(database_url)
    await db.execute(
        "INSERT INTO workers (id, host, pid, version, runs, heartbeat_at, gone_after,"
        " relay, relay_at) VALUES ($1, 'old-host', 4242, '0.1', '{worker}',"
        " now() - interval '1 hour', interval '30 seconds', $2::jsonb, now() - interval '1 hour')",
        uuid.uuid4(),
        json.dumps({"ok": False, "detail": "3 sessions refused in a row: stale", "recent": {}}),
    )
    worker = await start_service(config, run_web=False)
    web = await start_service(config, run_worker=False)
    console = Console(web, admin_url(web))
    await log_in(http, console, "victor")
    smtp_server.mail_reply = "553 5.7.1 sender address rejected: not owned by you"
    for _ in range(3):
        await portal.publish(encode(receipt()), routing_key="receipt")

    async def refusing() -> dict[str, Any] | None:
        async with http.get(console.url + "/api/overview") as response:
            relay: dict[str, Any] | None = (await response.json())["relay"]
        return relay if relay and not relay["ok"] else None

    relay = await eventually(refusing, timeout=30)
    assert relay["processes"] == 1  # the gone process is not counted
    [failing] = relay["failing"]
    assert failing["pid"] == os.getpid()
    assert "sessions refused in a row: 553 5.7.1 sender address rejected" in failing["detail"]
    assert "sender address rejected" in relay["last_reason"]
    assert relay["recent"]["sender"] >= 3 and relay["recent"]["auth"] == 0
    assert relay["last_success"] is None
    async with http.get(console.url + "/") as response:
        page = await response.text()
    shown = re.search(r'id="relay" class="ok-False">([^<]*)<', page)
    assert shown is not None
    assert re.search(f"pid {os.getpid()}: [0-9]+ sessions refused in a row: 553 ", shown.group(1))
    assert "stale" not in page.split('id="relay"')[1].split("</tr>")[0]

    smtp_server.mail_reply = None  # the relay takes our sender again
    await portal.publish(encode(receipt()), routing_key="receipt")

    async def accepting() -> dict[str, Any] | None:
        async with http.get(console.url + "/api/overview") as response:
            relay: dict[str, Any] | None = (await response.json())["relay"]
        return relay if relay and relay["ok"] and relay["last_success"] else None

    relay = await eventually(accepting, timeout=30)
    assert relay["failing"] == []
    assert "sender address rejected" in relay["last_reason"]  # the last failure, still told
    assert worker.part(WorkerRuntime).presence.registered
