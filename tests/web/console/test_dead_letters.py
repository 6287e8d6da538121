"""Dead letters as operators see them, with a real worker, RabbitMQ and PostgreSQL: looking
(the console's pages, `mailer dlq list|show`) changes nothing; poison RabbitMQ dead-lettered
reaches the table; a requeued job is delivered; no reason, page or listing shows an address."""

from __future__ import annotations

import json
from typing import Any

import aio_pika
import aiohttp
import asyncpg

from mailer.adapters.broker import Broker
from mailer.adapters.topology import DEAD_QUEUE, DELIVERY_LIMIT
from tests.conftest import StartService
from tests.support.dead_letters import dead_queue_depth, parked
from tests.support.http import admin_url
from tests.support.jobs import encode, receipt
from tests.support.newsletters import issue
from tests.support.processes import amailer, environment
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually
from tests.web.console.conftest import Console, add_operators, log_in

LOOKS = 25  # more than RabbitMQ 4's default delivery limit of 20, past which it drops them
PRIVATE = "jan.private@example.pl"


async def poison(portal: Broker, body: bytes, message_id: str) -> None:
    """A job handed out past the delivery limit, as a worker that crashes on it would leave
    it: RabbitMQ dead-letters it to mailer.dead."""
    await portal.declare([200, 400])
    await portal.publish(body, routing_key="receipt", message_id=message_id)
    channel = await portal.open_channel()
    queue = await channel.get_queue("mailer.receipts", ensure=False)
    for _ in range(DELIVERY_LIMIT + 1):
        message = await eventually(lambda: queue.get(fail=False))
        await message.nack(requeue=True)
    await channel.close()

    async def dead_lettered() -> bool:
        return await dead_queue_depth(portal) == 1

    await eventually(dead_lettered)


async def dead_api(http: aiohttp.ClientSession, console: Console) -> list[dict[str, Any]]:
    async with http.get(console.url + "/api/dead") as response:
        assert response.status == 200
        parked_jobs: list[dict[str, Any]] = (await response.json())["parked"]
        return parked_jobs


async def test_looking_changes_nothing_and_a_requeued_poison_job_is_delivered(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
    http: aiohttp.ClientSession,
) -> None:
    """Figures: 25 looks at each of 3 console pages and 3 through the CLI; deliveries of the
    parked job before and after: 21 and 21 (before the fix each look added one)."""
    job = receipt()
    body = encode(job)
    await poison(portal, body, job["id"])
    await add_operators(database_url)
    service = await start_service(config)
    console = Console(service, admin_url(service))
    csrf = await log_in(http, console, "alice")

    async def listed() -> list[dict[str, Any]] | None:
        found = await dead_api(http, console)
        return found if len(found) == 1 else None

    before = await eventually(listed)
    (row,) = before
    assert row["job_id"] == job["id"]
    assert row["origin"] == "mailer.receipts"
    assert row["reason"] == "poison: handed out more than 20 times, never settled"
    assert row["delivery_count"] == DELIVERY_LIMIT + 1
    ref = row["ref"]
    for _ in range(LOOKS):
        for path in ("/dead", "/api/dead", f"/dead/{ref}"):
            async with http.get(console.url + path) as response:
                assert response.status == 200, path
    after = await dead_api(http, console)
    assert after == before, f"{3 * LOOKS} looks changed the parked job: {before} → {after}"

    rows = await db.fetch("SELECT * FROM parked_jobs")
    env = environment(config)
    for look in (("list",), ("list", "--json"), ("show", ref)):
        shown = await amailer("dlq", *look, env=env)
        assert shown.returncode == 0, shown.stderr
        assert job["id"] in shown.stdout
    assert await db.fetch("SELECT * FROM parked_jobs") == rows
    assert await dead_api(http, console) == before
    assert await dead_queue_depth(portal) == 0
    (stored,) = await parked(db, 1)
    assert stored.body == body  # byte for byte
    assert stored.deliveries == DELIVERY_LIMIT + 1

    async with http.post(
        console.url + "/api/dead/requeue",
        json={"refs": [ref]},
        headers={**console.origin, "X-CSRF-Token": csrf},
    ) as response:
        assert response.status == 200
        lines = [json.loads(line) for line in (await response.text()).splitlines()]
    assert lines[0] == {
        "ref": ref,
        "job_id": job["id"],
        "origin": "mailer.receipts",
        "action": "requeue",
        "done": True,
    }

    async def delivered() -> list[Any]:
        return smtp_server.to(job["to"]["email"])

    (message,) = await eventually(delivered, timeout=30)
    assert f"Message-ID: <{job['id']}@".encode() in message.data
    assert "ZAM/2026/11/0042" in message.parsed()["Subject"]
    assert await db.fetchval("SELECT count(*) FROM parked_jobs") == 0
    audit = await db.fetch(
        "SELECT action, result, detail FROM console_audit WHERE action LIKE 'dead %'"
    )
    assert [tuple(a) for a in audit] == [("dead requeue", "done", "1 requeued")]


def hostile_jobs() -> list[tuple[str, bytes, str]]:
    """(routing key, body, the reason it is parked with): each one carries PRIVATE where a
    reason used to repeat it."""
    unknown_key = receipt(to={"email": "jan.kowalski@example.pl", PRIVATE: "x"})
    total = receipt(data={**receipt()["data"], "total": PRIVATE})
    kind = {**receipt(), "kind": PRIVATE}
    subject = issue(subject={PRIVATE: "Nowości"})
    link = issue(data={"articles": [{"title": "x", "body_html": "", "url": f"ftp://{PRIVATE}/"}]})
    return [
        (
            "receipt",
            encode(unknown_key),
            "to: has a field that is not part of this job (its name is not shown)",
        ),
        ("receipt", encode(total), "data.total: (a string, not shown) is not an amount such as"),
        ("receipt", encode(kind), "kind: unknown kind (a string, not shown); expected one of"),
        ("newsletter", encode(subject), "subject: (a string, not shown) is not a locale"),
        ("newsletter", encode(link), "template newsletter/pl: link 'ftp:/***e@e***e.pl/' must"),
    ]


async def test_no_reason_listing_or_page_shows_an_address(
    console: Console,
    http: aiohttp.ClientSession,
    portal: Broker,
    db: asyncpg.Connection,
    config: dict[str, Any],
) -> None:
    """Hostile jobs through the worker: the reasons stored, `mailer dlq list|show` and the
    console's pages hold no address (before the fix the first read
    `to.jan.private@example.pl: is not a field of this job`)."""
    jobs = hostile_jobs()
    for routing_key, body, _ in jobs:
        await portal.publish(body, routing_key=routing_key)
    stored = {job.body: job for job in await parked(db, len(jobs))}
    for _, body, reason in jobs:
        assert stored[body].reason.startswith(reason), (reason, stored[body].reason)
    assert not [job.reason for job in stored.values() if "@example.pl" in job.reason]
    env = environment(config)
    shown = [await amailer("dlq", "list", env=env), await amailer("dlq", "list", "--json", env=env)]
    shown += [await amailer("dlq", "show", job.ref, env=env) for job in stored.values()]
    for result in shown:
        assert result.returncode == 0, result.stderr
        assert PRIVATE not in result.stdout
        assert "jan.private@" not in result.stdout
    assert "to: has a field that is not part of this job" in shown[0].stdout
    await log_in(http, console, "victor")
    pages = ["/dead", "/api/dead", *(f"/dead/{job.ref}" for job in stored.values())]
    for path in pages:
        async with http.get(console.url + path) as response:
            assert response.status == 200, path
            page = await response.text()
        assert PRIVATE not in page, path
        assert "jan.private@" not in page, path
    async with http.get(f"{console.url}/dead/{stored[jobs[0][1]].ref}") as response:
        assert "j***e@e***e.pl" in await response.text()  # the body's key, masked


async def test_a_parked_job_from_mailer_dead_keeps_its_headers_masked(
    console: Console, http: aiohttp.ClientSession, portal: Broker, db: asyncpg.Connection
) -> None:
    """A message a worker parked in mailer.dead (the database was away), reason in its
    header with an address: moved into the table with the address masked there too."""
    channel = await portal.open_channel()
    await channel.default_exchange.publish(
        aio_pika.Message(
            b'{"kind": "receipt"}',
            headers={
                "x-mailer-origin-queue": "mailer.receipts",
                "x-mailer-reason": f"relay said: 550 <{PRIVATE}> unknown",
                "x-mailer-parked-at": "2026-12-02T03:00:00+00:00",
                "x-mailer-deliveries": 2,
                "x-portal": PRIVATE,
            },
        ),
        routing_key=DEAD_QUEUE,
    )
    await channel.close()
    (job,) = await parked(db, 1)
    assert job.reason == "relay said: 550 <j***e@e***e.pl> unknown"
    assert job.deliveries == 2
    assert job.parked_at.isoformat() == "2026-12-02T03:00:00+00:00"
    assert job.headers["x-portal"] == PRIVATE  # kept as it came, for a faithful requeue
    await log_in(http, console, "victor")
    async with http.get(f"{console.url}/dead/{job.ref}") as response:
        page = await response.text()
    assert PRIVATE not in page
    assert "j***e@e***e.pl" in page
