"""`mailer subscribers show ADDRESS` as an operator runs it, against a real worker: one
person's lists and status, suppression and latest messages, the address never printed."""

from __future__ import annotations

import re
import uuid
from typing import Any

import asyncpg

from mailer.adapters.broker import Broker
from mailer.core.addresses import address_key, address_ref
from tests.conftest import StartService
from tests.support.jobs import encode, receipt
from tests.support.newsletters import HASH_KEY, issue, subscribe, until_state
from tests.support.processes import environment, mailer
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

ANNA = "anna.nowak@example.pl"
JAN = "jan.kowalski@example.pl"
MOMENT = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
CONFIRMATION_IDS = uuid.UUID("6f0d4c1e-4a51-4f4e-9f7a-2b8c0f6d9e31")


def subscription(list_slug: str, *, confirmed: bool) -> dict[str, Any]:
    return {
        "kind": "subscription",
        "version": 1,
        "id": str(uuid.uuid4()),
        "action": "subscribe",
        "list": list_slug,
        "email": ANNA,
        "locale": "en",
        "confirmed": confirmed,
    }


async def test_show_a_persons_lists_suppression_and_latest_messages(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    config["lists"]["lucid-offers"] = {
        "name": "Lucid Offers",
        "from": "Lucid Offers <offers@lucid.example>",
        "default_locale": "pl",
    }
    await subscribe(database_url, [(JAN, "Jan Kowalski", "pl")])
    await start_service(config)
    env = environment(config)
    pending = subscription("lucid-offers", confirmed=False)  # a confirmation mail goes out
    joined = subscription("lucid-news", confirmed=True)
    for job in (pending, joined):
        await portal.publish(encode(job), routing_key="subscription")
    sold = receipt(to={"email": ANNA})
    others = receipt()  # to Jan: never shown
    for job in (sold, others):
        await portal.publish(encode(job), routing_key="receipt")

    async def all_subscribed() -> bool:
        n = await db.fetchval("SELECT count(*) FROM subscriptions WHERE status = 'subscribed'")
        return bool(n == 2)

    await eventually(all_subscribed)
    news = issue()
    await portal.publish(encode(news), routing_key="newsletter")
    await until_state(db, news["id"], "done")

    async def all_sent() -> bool:  # 2 receipts, 1 confirmation, the issue to Anna and Jan
        n = await db.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'")
        return bool(n == 5)

    await eventually(all_sent)
    assert mailer("suppressions", "add", ANNA, env=env).returncode == 0

    shown = mailer("subscribers", "show", "Anna.Nowak@Example.PL", env=env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    ref = address_ref(address_key(HASH_KEY, ANNA))
    assert lines[0] == f"{ref} (the address typed; it is not stored or shown)"
    assert lines[1] == "lists:"
    assert re.fullmatch(rf"  lucid-news\s+subscribed\s+since {MOMENT}  \(portal\)", lines[2])
    assert re.fullmatch(rf"  lucid-offers\s+pending\s+since {MOMENT}  \(portal\)", lines[3])
    assert re.fullmatch(
        rf"suppression: manual since {MOMENT}, for good: added by an operator", lines[4]
    ), lines[4]
    assert lines[5] == "latest messages, newest first:"
    assert lines[6].split() == ["UPDATED", "KIND", "JOB", "STATUS", "ATTEMPTS", "DETAIL"]
    messages = {}
    for line in lines[7:-1]:
        found = re.fullmatch(rf"  ({MOMENT})  (\w+)\s+([0-9a-f-]{{36}})  (\w+)\s+(\d+)  (.*)", line)
        assert found is not None, line
        messages[found[3]] = (found[2], found[4], found[5])
    assert messages == {
        news["id"]: ("newsletter", "sent", "1"),
        sold["id"]: ("receipt", "sent", "1"),
        str(uuid.uuid5(CONFIRMATION_IDS, pending["id"])): ("confirmation", "sent", "1"),
    }, shown.stdout
    assert re.fullmatch(rf"measured at {MOMENT}", lines[-1])
    assert "@" not in shown.stdout + shown.stderr  # no address, Anna's or anyone's
    assert others["id"] not in shown.stdout

    unknown = mailer("subscribers", "show", "nobody@example.org", env=env)
    assert unknown.returncode == 1
    assert unknown.stdout.splitlines()[1:4] == [
        "lists: on none",
        "suppression: none",
        "latest messages: none",
    ]
    bad = mailer("subscribers", "show", "not-an-address", env=env)
    assert bad.returncode == 1 and "not a valid e-mail address" in bad.stderr
    assert "not-an-address" not in bad.stderr
