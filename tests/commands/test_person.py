"""`mailer subscribers show|unsubscribe ADDRESS` as an operator runs it, against a real worker:
one person's lists and status, suppression and latest messages, the address never printed;
their unsubscribe from one list or every list."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from mailer.adapters.broker import Broker
from mailer.core.addresses import address_key, address_ref
from tests.conftest import ROOT, StartService
from tests.support.jobs import encode, receipt
from tests.support.newsletters import HASH_KEY, issue, subscribe, until_state
from tests.support.processes import amailer, environment
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
    assert (await amailer("suppressions", "add", ANNA, env=env)).returncode == 0

    shown = await amailer("subscribers", "show", "Anna.Nowak@Example.PL", env=env)
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

    unknown = await amailer("subscribers", "show", "nobody@example.org", env=env)
    assert unknown.returncode == 1
    assert unknown.stdout.splitlines()[1:4] == [
        "lists: on none",
        "suppression: none",
        "latest messages: none",
    ]
    bad = await amailer("subscribers", "show", "not-an-address", env=env)
    assert bad.returncode == 1 and "not a valid e-mail address" in bad.stderr
    assert "not-an-address" not in bad.stderr


async def test_unsubscribe_a_person_from_one_list_then_every_list(
    config: dict[str, Any], db: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    """By the address typed, which is hashed and never printed: one line per list they were
    on; someone on no list is told so with exit status 1, an unknown list with 2."""
    await subscribe(database_url, [(ANNA, "Anna Nowak", "pl"), (JAN, "Jan Kowalski", "pl")])
    await subscribe(database_url, [(ANNA, "Anna Nowak", "pl")], list_slug="lucid-offers")
    toml = tmp_path / "mailer.toml"
    toml.write_text(
        (ROOT / "config" / "mailer.toml").read_text(encoding="utf-8")
        + '\n[lists.lucid-offers]\nname = "Lucid Offers"\n'
        'from = "Lucid Offers <offers@lucid.example>"\n',
        encoding="utf-8",
    )
    env = environment(config, MAILER_CONFIG=str(toml))
    ref = address_ref(address_key(HASH_KEY, ANNA))

    one = await amailer("subscribers", "unsubscribe", ANNA, "--list", "lucid-offers", env=env)
    assert (one.returncode, one.stdout) == (0, f"{ref}: lucid-offers: subscribed → unsubscribed\n")
    every = await amailer("subscribers", "unsubscribe", "Anna.Nowak@Example.PL", env=env)
    assert every.returncode == 0, every.stderr
    assert every.stdout.splitlines() == [
        f"{ref}: lucid-news: subscribed → unsubscribed",
        f"{ref}: lucid-offers: unsubscribed already",
    ]
    statuses = await db.fetch(
        "SELECT s.email, l.slug, sub.status, sub.source FROM subscriptions sub"
        " JOIN subscribers s ON s.id = sub.subscriber_id JOIN lists l ON l.id = sub.list_id"
        " ORDER BY s.email, l.slug"
    )
    assert [tuple(r) for r in statuses] == [
        (ANNA, "lucid-news", "unsubscribed", "operator"),
        (ANNA, "lucid-offers", "unsubscribed", "operator"),
        (JAN, "lucid-news", "subscribed", "import"),
    ]
    nobody = await amailer("subscribers", "unsubscribe", "nobody@example.org", env=env)
    nobody_ref = address_ref(address_key(HASH_KEY, "nobody@example.org"))
    assert (nobody.returncode, nobody.stdout) == (1, f"{nobody_ref}: not on any list\n")
    unknown = await amailer("subscribers", "unsubscribe", ANNA, "--list", "nope", env=env)
    assert unknown.returncode == 2 and "no list 'nope'" in unknown.stderr
    said = "".join(r.stdout + r.stderr for r in (one, every, nobody, unknown))
    assert "@" not in said
