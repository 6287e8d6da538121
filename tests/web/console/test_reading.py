"""What an operator reads on the console's pages, over HTTP against the running services:
counts by their own names, every time in one format, a scheduled issue's start, a finished
issue's last send, receipts and confirmations each called so, and nothing half-rendered."""

from __future__ import annotations

import html
import json
import re
import uuid
from typing import Any

import aiohttp
import asyncpg

from mailer.adapters.broker import Broker
from mailer.parts.bounces import BounceReception
from tests.conftest import StartService
from tests.support.bounces import bounce_config, dsn, send_report
from tests.support.http import admin_url, base_url
from tests.support.jobs import encode, receipt
from tests.support.newsletters import issue, people, subscribe, until_state
from tests.support.processes import amailer, environment
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually
from tests.web.console.conftest import Console, add_operators, log_in

MOMENT = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")
# The confirmation mail's job id follows from the subscription job's (worker/subscriptions.py).
CONFIRMATION_IDS = uuid.UUID("6f0d4c1e-4a51-4f4e-9f7a-2b8c0f6d9e31")


def text_of(page: str) -> str:
    """The page as read: tags dropped (a block's end spaces it from what follows), entities
    decoded, spaces collapsed."""
    inline = re.sub(r"</?(?:a|span|code)\b[^>]*>", "", page)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", inline)))


async def page(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as response:
        assert response.status == 200, url
        return await response.text()


async def captured_console(
    config: dict[str, Any], start_service: StartService, database_url: str
) -> Console:
    """mailer as `scripts/run` starts it: no relay, mail taken by the embedded capture."""
    del config["smtp"]["url"]
    config["smtp"]["capture"] = True
    config["admin"]["refresh_seconds"] = 1
    await add_operators(database_url)
    service = await start_service(config)
    return Console(service, admin_url(service))


async def test_a_finished_issue_whose_mail_was_captured_says_so_and_when(
    config: dict[str, Any],
    start_service: StartService,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    database_url: str,
    portal: Broker,
) -> None:
    """Its page counts captured 2, sent 0, every status by its own name, and says when the
    last message went out (not "never"); the list counts it so too."""
    console = await captured_console(config, start_service, database_url)
    await subscribe(database_url, people(2))
    done = issue()
    await portal.publish(encode(done), routing_key="newsletter")
    await until_state(db, done["id"], "done")
    await log_in(http, console, "alice")

    shown = await page(http, f"{console.url}/issues/{done['id']}")
    read = text_of(shown)
    assert re.search(rf"Rate and ETA —; last sent {MOMENT} \(\d+ s ago\)", read), read
    counts = re.search(r'<p id="issue-counts">(.*?)</p>', shown)
    assert counts is not None, shown
    assert text_of(counts[1]).strip() == (
        "sent 0 · captured 2 · bounced 0 · suppressed 0 · failed 0 · cancelled 0"
        " · pending 0 · sending 0 · retrying 0"
    )
    listed = text_of(await page(http, f"{console.url}/issues"))
    heads = "sent captured bounced suppressed failed cancelled pending sending retrying"
    assert re.search(rf"{heads} .* 2 / 2 2 / 2 — 0 2 0 0 0 0 0 0 0 ", listed), listed


async def test_a_finished_issue_reads_as_issue_list_reads_it(
    config: dict[str, Any],
    start_service: StartService,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    database_url: str,
    portal: Broker,
    smtp_server: SmtpServer,
) -> None:
    """Its subject in the list's default locale (Polish here), and its counts as stored:
    a bounce that comes back after the console first showed the issue moves one message
    from sent to bounced on its page and in the list at once, as in `mailer issue list`."""
    config["bounces"] = bounce_config()
    config["admin"]["refresh_seconds"] = 1
    await add_operators(database_url)
    service = await start_service(config)
    console = Console(service, admin_url(service))
    await subscribe(database_url, people(2))
    done = issue(subject={"pl": "Listopad", "en": "November"})
    await portal.publish(encode(done), routing_key="newsletter")
    await until_state(db, done["id"], "done")
    await log_in(http, console, "alice")

    async def shown() -> tuple[str, dict[str, int], dict[str, int]]:
        async with http.get(f"{console.url}/api/issues/{done['id']}") as response:
            one = (await response.json())["issue"]
        async with http.get(f"{console.url}/api/issues") as response:
            (listed,) = (await response.json())["issues"]
        assert listed["subject"] == one["subject"]
        return one["subject"], one["counts"], listed["counts"]

    assert await shown() == ("Listopad", {"sent": 2}, {"sent": 2})
    address = "person0@example.pl"
    (sent,) = smtp_server.to(address)
    port = service.part(BounceReception).bounces.receiver.port
    await send_report(port, sent.mail_from, dsn(sent.mail_from, address))

    async def bounced() -> bool:
        status = await db.fetchval(
            "SELECT status FROM deliveries WHERE job_id = $1 AND status = 'bounced'",
            uuid.UUID(done["id"]),
        )
        return status is not None

    await eventually(bounced)
    moved = {"sent": 1, "bounced": 1}

    async def after() -> bool:
        return await shown() == ("Listopad", moved, moved)

    await eventually(after)
    listed = await amailer("issue", "list", "--json", env=environment(config))
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["counts"] == moved
    text = (await amailer("issue", "list", env=environment(config))).stdout.splitlines()[1]
    assert text.endswith("  Listopad"), text


async def test_a_scheduled_issue_says_when_it_starts(
    console: Console,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    portal: Broker,
) -> None:
    """On its page, in the list and among the overview's active issues, in the one format."""
    scheduled = issue(send_at="2030-01-02T09:30:00+01:00")
    await portal.publish(encode(scheduled), routing_key="newsletter")
    await until_state(db, scheduled["id"], "scheduled")
    await log_in(http, console, "alice")
    upcoming = await page(http, f"{console.url}/issues/{scheduled['id']}")
    assert '<dt>Starts</dt><dd id="issue-starts">2030-01-02 08:30:00 UTC</dd>' in upcoming
    for where in ("/issues", "/"):
        shown = text_of(await page(http, console.url + where))
        assert "starts 2030-01-02 08:30:00 UTC" in shown, (where, shown)


async def test_the_overview_writes_every_time_one_way(
    config: dict[str, Any],
    start_service: StartService,
    http: aiohttp.ClientSession,
    database_url: str,
    portal: Broker,
) -> None:
    """The relay's last success (which the worker processes report in ISO 8601) reads as
    every other time on the page does."""
    console = await captured_console(config, start_service, database_url)
    await portal.publish(encode(receipt()), routing_key="receipt")  # a session for the relay
    await log_in(http, console, "alice")
    relay = re.compile(r"Relay \(every worker\) .*? last success (.+?); last failure")

    async def overview() -> str | None:  # once a worker has reported its relay's success
        shown = text_of(await page(http, console.url + "/"))
        found = relay.search(shown)
        return shown if found and found[1] != "never" else None

    front = await eventually(overview, timeout=20, interval=0.5)
    found = relay.search(front)
    assert found is not None and re.fullmatch(MOMENT, found[1]), found
    assert re.search(rf"Relay \(this process\) .*? last success {MOMENT}; last failure", front)
    assert not ISO.search(front), ISO.findall(front)


async def test_the_overview_names_its_services_in_one_case(
    console: Console, http: aiohttp.ClientSession
) -> None:
    """Database, Broker (this process), Relay (this process)…: each service's name is
    capitalized, and no Markdown is left in the page."""
    await log_in(http, console, "alice")
    shown = await page(http, console.url + "/")
    names = re.findall(r"<tr><th>([^<]+)</th>", shown.split("<h2>Services</h2>")[1])
    assert "Broker (this process)" in names, names
    assert len(names) >= 5 and all(name[0].isupper() for name in names), names
    assert "`" not in shown


async def test_receipts_and_confirmations_each_called_so(
    console: Console,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    portal: Broker,
    smtp_server: SmtpServer,
) -> None:
    """A receipt and the double opt-in mail of a subscription: the ledger, the summary and
    the rows say receipt and confirmation, and the summary ends with its last count."""
    sold = receipt()
    await portal.publish(encode(sold), routing_key="receipt")
    subscription: dict[str, Any] = {
        "kind": "subscription",
        "version": 1,
        "id": str(uuid.uuid4()),
        "action": "subscribe",
        "list": "lucid-news",
        "email": "anna.nowak@example.pl",
        "locale": "en",
        "confirmed": False,
    }
    await portal.publish(encode(subscription), routing_key="subscription")
    confirmation = uuid.uuid5(CONFIRMATION_IDS, subscription["id"])

    async def recorded() -> bool:
        n = await db.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'")
        return bool(n == 2)

    await eventually(recorded, timeout=30)
    kinds = dict(await db.fetch("SELECT id, kind FROM jobs WHERE kind <> 'subscription'"))
    assert kinds == {uuid.UUID(sold["id"]): "receipt", confirmation: "confirmation"}

    await log_in(http, console, "alice")
    shown = await page(http, console.url + "/receipts")
    summary = re.search(r'<p id="receipt-counts">(.*?)</p>', shown)
    assert summary is not None
    assert text_of(summary[1]).strip() == "Last 24 hours: receipts sent 1; confirmations sent 1"
    rows = {
        job: kind
        for kind, job in re.findall(
            r"<td>(receipt|confirmation)</td><td><a href=\"/receipts\?job=([0-9a-f-]+)\">", shown
        )
    }
    assert rows == {sold["id"]: "receipt", str(confirmation): "confirmation"}, shown


async def test_the_preview_page_reads_as_text(
    console: Console, http: aiohttp.ClientSession
) -> None:
    """No Markdown left in the page: a command reads as code, not between backticks."""
    await log_in(http, console, "alice")
    preview = await page(http, console.url + "/preview")
    assert "`" not in preview
    assert "as <code>mailer issue preview</code> renders it" in preview


async def test_both_listeners_serve_our_icon_to_anyone(console: Console) -> None:
    """/favicon.ico on the console (no session needed) and on the public listener, the
    same small ICO of our own; the public pages' policy lets them show it."""
    public = base_url(console.service)
    async with aiohttp.ClientSession() as anyone:
        icons = []
        for url in (console.url, public):
            async with anyone.get(url + "/favicon.ico", allow_redirects=False) as response:
                assert response.status == 200, url
                assert response.content_type == "image/vnd.microsoft.icon"
                icons.append(await response.read())
        async with anyone.get(public + "/u/not-a-token") as response:
            policy = response.headers["Content-Security-Policy"]
    assert icons[0] == icons[1]
    assert icons[0][:4] == b"\x00\x00\x01\x00"  # an ICO file
    assert "img-src 'self'" in policy
