"""One unsubscribe, whatever asked for it: the portal's subscription job, the page's button, an
RFC 8058 one-click POST, a complaint, an operator's `mailer subscribers unsubscribe`. Each
leaves the same rows behind, on a real service and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest

from mailer.adapters.broker import Broker
from mailer.adapters.issues import Issues
from mailer.adapters.subscribers import Subscribers
from mailer.core.tokens import Subscription, unsubscribe_token
from mailer.parts.bounces import BounceReception
from mailer.service import Service
from tests.conftest import StartService
from tests.support.bounces import arf, bounce_config, send_report
from tests.support.http import base_url, metric
from tests.support.jobs import encode, receipt
from tests.support.newsletters import issue, subscribe
from tests.support.processes import environment, mailer
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually
from tests.web.conftest import KEYS, SAME_ORIGIN
from tests.worker.test_receipts import settled

ANNA = "anna.nowak@example.pl"  # unsubscribes
OLA = "ola@example.pl"  # stays
Path = Callable[["Unsubscribing"], Awaitable[None]]


class Unsubscribing:
    """Anna and Ola on lucid-news, an issue of it paused with a message to each waiting, and
    the service running: the stage every path plays on."""

    def __init__(
        self,
        service: Service,
        db: asyncpg.Connection,
        portal: Broker,
        smtp_server: SmtpServer,
        config: dict[str, Any],
        anna: Subscription,
    ) -> None:
        self.service = service
        self.db = db
        self.portal = portal
        self.smtp_server = smtp_server
        self.config = config
        self.anna = anna

    async def post(self, form: dict[str, str], headers: dict[str, str]) -> None:
        url = f"{base_url(self.service)}/u/{unsubscribe_token(KEYS, self.anna)}"
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, data=form, headers=headers) as page,
        ):
            assert page.status == 200, await page.text()


async def portal_job(stage: Unsubscribing) -> None:
    job_id = uuid.uuid4()
    job = {
        "kind": "subscription",
        "version": 1,
        "id": str(job_id),
        "action": "unsubscribe",
        "list": "lucid-news",
        "email": ANNA,
    }
    await stage.portal.publish(encode(job), routing_key="subscription")

    async def applied() -> bool:
        found = await stage.db.fetchval("SELECT 1 FROM jobs WHERE id = $1", job_id)
        return found is not None

    await eventually(applied)


async def page_button(stage: Unsubscribing) -> None:
    await stage.post({"action": "unsubscribe"}, SAME_ORIGIN)


async def one_click(stage: Unsubscribing) -> None:
    await stage.post({"List-Unsubscribe": "One-Click"}, {})


async def complaint(stage: Unsubscribing) -> None:
    """A feedback-loop report about a receipt Anna got: a complaint about any message of
    ours takes her off every list."""
    sold = receipt(to={"email": ANNA, "name": "Anna Nowak"})
    await stage.portal.publish(encode(sold), routing_key="receipt")
    assert (await settled(stage.db, sold["id"]))["status"] == "sent"
    (sent,) = stage.smtp_server.to(ANNA)
    port = stage.service.part(BounceReception).bounces.receiver.port
    answer = await send_report(port, sent.mail_from, arf(sent.mail_from, ANNA))
    report_id = int(answer.text.rsplit(" ", 1)[1])

    async def classified() -> str | None:
        kind: str | None = await stage.db.fetchval(
            "SELECT kind FROM bounce_reports WHERE id = $1 AND classified_at IS NOT NULL",
            report_id,
        )
        return kind

    assert await eventually(classified, timeout=10) == "complaint"


async def operator(stage: Unsubscribing) -> None:
    env = environment(stage.config)
    done = await asyncio.to_thread(
        mailer, "subscribers", "unsubscribe", ANNA, "--list", "lucid-news", env=env
    )
    assert done.returncode == 0, done.stderr
    assert ANNA not in done.stdout + done.stderr


PATHS: dict[str, tuple[Path, str]] = {
    "portal": (portal_job, "portal"),
    "page": (page_button, "page"),
    "one-click": (one_click, "one-click"),
    "complaint": (complaint, "complaint"),
    "operator": (operator, "operator"),
}


async def paused_issue(database_url: str) -> uuid.UUID:
    """An issue of lucid-news that started (a delivery pending for each subscriber) and was
    paused at once, before any worker ran: its messages wait."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        list_id = (await Subscribers(pool).list_ids(["lucid-news"]))["lucid-news"]
        issues = Issues(pool)
        job = issue()
        issue_id = uuid.UUID(job["id"])
        digest = hashlib.sha256(json.dumps(job).encode()).digest()
        assert await issues.accept(issue_id, digest, list_id, job, None) == "accepted"
        assert [started for started, _ in await issues.start_due()] == [issue_id]
        assert await issues.set_state(issue_id, "pause") == ("sending", "paused")
    finally:
        await pool.close()
    return issue_id


async def rows(db: asyncpg.Connection, issue_id: uuid.UUID) -> dict[str, Any]:
    """What an unsubscribe leaves: Anna's subscription, the issue's messages, suppressions."""
    subscription = await db.fetchrow(
        "SELECT sub.status, sub.source FROM subscriptions sub"
        " JOIN subscribers s ON s.id = sub.subscriber_id WHERE s.email = $1",
        ANNA,
    )
    assert subscription is not None
    waiting = await db.fetch(
        "SELECT s.email, d.status, d.detail FROM deliveries d"
        " JOIN subscribers s ON s.id = d.subscriber_id WHERE d.job_id = $1 ORDER BY s.email",
        issue_id,
    )
    return {
        "status": subscription["status"],
        "source": subscription["source"],
        "messages": [tuple(r) for r in waiting],
        "suppressions": await db.fetchval("SELECT count(*) FROM suppressions"),
        "Ola": await db.fetchval(
            "SELECT sub.status FROM subscriptions sub"
            " JOIN subscribers s ON s.id = sub.subscriber_id WHERE s.email = $1",
            OLA,
        ),
    }


@pytest.mark.parametrize("path", list(PATHS))
async def test_every_unsubscribe_leaves_the_same_rows(
    path: str,
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    """Her subscription ends; her message still waiting in an issue of the list is suppressed
    (Ola's is not); no suppression is written (receipts still go to her); the workers are told
    at once; the metric counts it by where it came from."""
    ids = await subscribe(database_url, [(ANNA, "Anna Nowak", "pl"), (OLA, "Ola", "pl")])
    issue_id = await paused_issue(database_url)
    anna = Subscription(
        ids[ANNA], await db.fetchval("SELECT id FROM lists WHERE slug = 'lucid-news'")
    )
    told: list[str] = []
    await db.add_listener("mailer_optout", lambda *args: told.append(args[-1]))
    config["bounces"] = bounce_config()
    service = await start_service(config)
    act, source = PATHS[path]
    await act(Unsubscribing(service, db, portal, smtp_server, config, anna))

    async def heard() -> bool:
        return bool(told)

    await eventually(heard)
    assert await rows(db, issue_id) == {
        "status": "unsubscribed",
        "source": source,
        "messages": [(ANNA, "suppressed", "unsubscribed"), (OLA, "pending", None)],
        "suppressions": 0,
        "Ola": "subscribed",
    }
    assert [payload.partition(":")[0] for payload in told] == [str(anna.subscriber_id)]
    if path != "operator":  # the command's own process counts it, not the service's
        assert await metric(service, "mailer_unsubscribes_total", source=source) == 1
