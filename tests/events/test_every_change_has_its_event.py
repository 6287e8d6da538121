"""No path writes a change of a message's, a subscription's or an issue's fate without its
event. Two halves: a scan of every write to those tables, each either in a function that
writes its event through the outbox (mailer/adapters/outbox.py) or named below with why it
has none; and tests that drive each path and read the event rows it wrote."""

from __future__ import annotations

import ast
import json
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from mailer.adapters import outbox
from mailer.adapters.bounces import Classification, PendingReport
from mailer.adapters.deliveries import Deliveries, record_bounce
from mailer.adapters.issues import Issues
from mailer.adapters.subscribers import Subscribers
from mailer.core.addresses import address_key
from mailer.core.deliveries import DeliveryStatus, Write
from tests.support import table_writers as scan
from tests.support.newsletters import HASH_KEY

TABLES = ("deliveries", "subscriptions", "subscribers", "issues")
# Writes that change no fate a portal is told of, each with why.
NO_EVENT = {
    "mailer/adapters/deliveries.py:_CLAIM_CHUNK": "a claim",
    "mailer/adapters/deliveries.py:renew_leases": "a claim kept",
    "mailer/adapters/deliveries.py:hand_back": "a claim given back unattempted",
    "mailer/adapters/deliveries.py:release_unattempted": "claims given back at shutdown",
    "mailer/adapters/deliveries.py:reclaim_expired": "lapsed claims given back",
    "mailer/adapters/deliveries.py:_MATERIALIZE": "the deliveries of an issue starting"
    " (its issue.started event is written with them, by start_due)",
    "mailer/adapters/deliveries.py:cancel_waiting": "cancelled with their issue (its"
    " issue.finished event, state cancelled, is written with them, by set_state)",
    "mailer/adapters/sql/deliveries.sql:claim_receipt": "a claim",
    "mailer/adapters/issues.py:accept": "an issue scheduled: issue.started comes when it starts",
    "mailer/adapters/sql/issues.sql:issue_outcome_moved": "stored counts following a bounce",
    "mailer/adapters/subscribers.py:_IMPORT_SQL": "an operator's import of people whose"
    " consent is held: not told to the portal (docs/events.md)",
}
# SQL functions whose events their one Python caller writes in the same transaction.
SQL_CALLERS = {
    "mailer/adapters/sql/deliveries.sql:record_deliveries": "mailer/adapters/deliveries.py:_record",
    "mailer/adapters/sql/deliveries.sql:bounce_delivery": "mailer/adapters/deliveries.py:"
    "record_bounce",
    "mailer/adapters/sql/issues.sql:issues_done": "mailer/adapters/issues.py:complete",
}
# Helpers that write events, as a function calling them does.
EVENT_WRITERS = ("outbox.append(", "outbox.erase_recipient(", "self._confirmed(")


def _enclosing(path: Path, line: int) -> tuple[str, str]:
    """(name, source) of the innermost function holding `line`, else of the module-level
    assignment holding it."""
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    functions = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.lineno <= line <= (node.end_lineno or node.lineno)
    ]
    if functions:
        inner = max(functions, key=lambda node: node.lineno)
        return inner.name, ast.get_source_segment(text, inner) or ""
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.lineno <= line <= (node.end_lineno or 0):
            target = node.targets[0]
            assert isinstance(target, ast.Name)
            return target.id, ast.get_source_segment(text, node) or ""
    raise AssertionError(f"{path}:{line} is in no function or assignment")


def _function_source(where: str) -> str:
    path, _, name = where.partition(":")
    tree = ast.parse((scan.ROOT / path).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return ast.get_source_segment((scan.ROOT / path).read_text(), node) or ""
    raise AssertionError(f"no function {where}")


def test_every_write_of_a_fate_writes_its_event_or_says_why_not() -> None:
    unexplained = []
    seen = set()
    for write in scan.writes():
        if write.table not in TABLES:
            continue
        path, _, rest = write.where.partition(":")
        if path.endswith(".sql"):
            where = write.where
            if where in SQL_CALLERS:
                source = _function_source(SQL_CALLERS[where])
                where_events = SQL_CALLERS[where]
            else:
                source, where_events = "", where
        else:
            name, source = _enclosing(scan.ROOT / path, int(rest))
            where = where_events = f"{path}:{name}"
        seen.add(where)
        if where in NO_EVENT:
            continue
        if not any(writer in source for writer in EVENT_WRITERS):
            unexplained.append(f"{write.where} ({write.verb} {write.table}) in {where_events}")
    assert unexplained == [], "writes without their event:\n" + "\n".join(unexplained)
    assert sorted(set(NO_EVENT) - seen) == [], "explained writes that no longer exist"


# --- each path, driven, and the events it wrote --------------------------------------------


async def _events(db: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT body::text AS body FROM events ORDER BY seq")
    return [json.loads(r["body"]) for r in rows]


async def _newsletter(pool: asyncpg.Pool, people: int) -> tuple[uuid.UUID, int, list[str]]:
    """An issue of lucid-news started, to `people` subscribers."""
    subscribers = Subscribers(pool)
    list_id = (await subscribers.list_ids(["lucid-news"]))["lucid-news"]
    emails = [f"p{n}@example.pl" for n in range(people)]
    for email in emails:
        await subscribers.subscribe(
            list_id=list_id,
            address_key=address_key(HASH_KEY, email),
            email=email,
            name=None,
            locale=None,
            confirmed=True,
            source="portal",
        )
    issues = Issues(pool)
    issue_id = uuid.uuid4()
    assert await issues.accept(issue_id, b"d", list_id, {"subject": "S"}, None) == "accepted"
    assert await issues.start_due() == [(issue_id, people)]
    return issue_id, list_id, emails


async def test_outcomes_and_the_issue_finishing_write_their_events(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        issue_id, list_id, emails = await _newsletter(pool, 4)
        deliveries = Deliveries(pool, worker_id=uuid.uuid4(), lease=60)
        claimed = await deliveries.claim_chunk(issue_id, list_id, 10)
        by_email = {c.email: c.id for c in claimed}
        writes = [
            Write(by_email["p0@example.pl"], DeliveryStatus.SENT, True, "250 ok", "<m0@x>"),
            Write(by_email["p1@example.pl"], DeliveryStatus.FAILED, True, "550 no", detail="x"),
            Write(by_email["p2@example.pl"], DeliveryStatus.SUPPRESSED, detail="unsubscribed"),
            Write(by_email["p3@example.pl"], DeliveryStatus.RETRYING, True, "451 later"),
        ]
        addresses = {i: e for e, i in by_email.items() if e is not None}
        await deliveries.record(writes, addresses)
        (retry,) = await deliveries.claim_chunk(issue_id, list_id, 10)  # no not_before: due
        recorded = await deliveries.record(
            [Write(retry.id, DeliveryStatus.SENT, True, "250 ok", "<m3@x>")], addresses
        )
        assert recorded.finished_issues == [issue_id]
        async with pool.acquire() as db:
            events = await _events(db)
    finally:
        await pool.close()
    mine = [(e["type"], e["recipient"]) for e in events if e["type"].startswith("message.")]
    assert mine == [
        ("message.delivered", "p0@example.pl"),
        ("message.failed", "p1@example.pl"),
        ("message.suppressed", "p2@example.pl"),
        ("message.deferred", "p3@example.pl"),
        ("message.delivered", "p3@example.pl"),
    ]
    delivered = next(e for e in events if e["type"] == "message.delivered")
    assert delivered["job_id"] == str(issue_id)
    assert (delivered["kind"], delivered["list"], delivered["message_id"]) == (
        "newsletter",
        "lucid-news",
        "<m0@x>",
    )
    assert delivered["detail"] == {"reply": "250 ok"}
    assert [e["type"] for e in events if e["type"].startswith("issue.")] == [
        "issue.started",
        "issue.finished",
    ]
    finished = events[-1]
    assert finished["detail"] == {
        "state": "done",
        "counts": {"sent": 2, "failed": 1, "suppressed": 1},
    }
    confirmed = [e for e in events if e["type"] == "subscription.confirmed"]
    assert [e["recipient"] for e in confirmed] == emails


async def test_a_receipts_outcome_event_carries_its_address(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        deliveries = Deliveries(pool, worker_id=uuid.uuid4(), lease=60)
        job = uuid.uuid4()
        claim = await deliveries.claim_receipt(job, b"digest", b"key")
        assert claim.delivery_id is not None
        write = Write(claim.delivery_id, DeliveryStatus.SENT, True, "250 ok", "<r@x>")
        await deliveries.record([write], {claim.delivery_id: "jan.kowalski@example.pl"})
        async with pool.acquire() as db:
            (event,) = await _events(db)
    finally:
        await pool.close()
    assert (event["type"], event["kind"], event["job_id"], event["list"]) == (
        "message.delivered",
        "receipt",
        str(job),
        None,
    )
    assert event["recipient"] == "jan.kowalski@example.pl"


async def test_bounces_complaints_unsubscribes_pauses_and_cancels_write_their_events(
    database_url: str,
) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        issue_id, list_id, _ = await _newsletter(pool, 3)
        deliveries = Deliveries(pool, worker_id=uuid.uuid4(), lease=60)
        claimed = {c.email: c for c in await deliveries.claim_chunk(issue_id, list_id, 2)}
        await deliveries.record(
            [
                Write(c.id, DeliveryStatus.SENT, True, "250", f"<{c.id}@x>")
                for c in claimed.values()
            ],
            {c.id: c.email for c in claimed.values() if c.email},
        )
        first, second = sorted(claimed.values(), key=lambda c: c.id)
        async with pool.acquire() as conn, conn.transaction():
            assert await record_bounce(
                conn, first.id, kind="hard", status="5.1.1", diagnostic="550", reason="gone"
            )
        async with pool.acquire() as conn, conn.transaction():
            pending = PendingReport(1, b"", second.id, b"k", "sent", issue_id, second.subscriber_id)
            complaint = Classification(conn, pending)
            await complaint.complained("abuse report")
            assert await complaint.unsubscribe_everywhere() == 1
        issues = Issues(pool)
        assert await issues.set_state(issue_id, "pause", "too many complaints") == (
            "sending",
            "paused",
        )
        assert await issues.set_state(issue_id, "cancel") == ("paused", "cancelled")
        async with pool.acquire() as db:
            events = await _events(db)
    finally:
        await pool.close()
    later = [e for e in events if e["type"] not in ("subscription.confirmed", "issue.started")]
    assert [(e["type"], e["recipient"]) for e in later] == [
        ("message.delivered", first.email),
        ("message.delivered", second.email),
        ("message.bounced", first.email),
        ("message.complained", second.email),
        ("subscription.unsubscribed", second.email),
        ("issue.paused", None),
        ("issue.finished", None),
    ]
    bounced, complained, unsubscribed, paused, finished = later[2:]
    assert bounced["detail"] == {"class": "hard", "status": "5.1.1", "diagnostic": "550"}
    assert bounced["message_id"] == f"<{first.id}@x>"
    assert complained["detail"] == {"reason": "abuse report"}
    assert (unsubscribed["list"], unsubscribed["detail"]) == ("lucid-news", {"source": "complaint"})
    assert paused["detail"] == {"reason": "too many complaints"}
    assert finished["detail"] == {"state": "cancelled"}


async def test_an_unsubscribe_suppresses_waiting_messages_with_their_events(
    database_url: str,
) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        issue_id, list_id, _ = await _newsletter(pool, 2)
        subscribers = Subscribers(pool)
        before = await subscribers.unsubscribe_address(
            address_key(HASH_KEY, "p1@example.pl"), "portal", list_id=list_id
        )
        assert before == {list_id: "subscribed"}
        async with pool.acquire() as db:
            events = await _events(db)
    finally:
        await pool.close()
    last = [(e["type"], e["recipient"], e["job_id"]) for e in events[-2:]]
    assert last == [
        ("subscription.unsubscribed", "p1@example.pl", None),
        ("message.suppressed", "p1@example.pl", str(issue_id)),
    ]


async def test_a_confirmation_link_writes_subscription_confirmed(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        subscribers = Subscribers(pool)
        list_id = (await subscribers.list_ids(["lucid-news"]))["lucid-news"]
        subscriber_id, _ = await subscribers.subscribe(
            list_id=list_id,
            address_key=address_key(HASH_KEY, "ola@example.pl"),
            email="ola@example.pl",
            name=None,
            locale=None,
            confirmed=False,
        )
        async with pool.acquire() as db:
            assert await _events(db) == []  # pending is no event
        assert await subscribers.confirm(subscriber_id, list_id, int(time.time() // 86400))
        async with pool.acquire() as db:
            (event,) = await _events(db)
    finally:
        await pool.close()
    assert (event["type"], event["recipient"], event["list"], event["detail"]) == (
        "subscription.confirmed",
        "ola@example.pl",
        "lucid-news",
        {"source": "confirmation"},
    )


async def test_erasing_a_person_erases_their_address_from_kept_events(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await _newsletter(pool, 2)
        async with pool.acquire() as conn:
            await outbox.append(
                conn, [outbox.event("message.delivered", recipient="P0@Example.pl")]
            )
        subscribers = Subscribers(pool)
        assert await subscribers.erase(address_key(HASH_KEY, "p0@example.pl"), "p0@example.pl")
        async with pool.acquire() as db:
            events = await _events(db)
            text = await db.fetchval("SELECT string_agg(body::text, ' ') FROM events")
    finally:
        await pool.close()
    erased = [e for e in events if e.get("erased")]
    assert len(erased) == 2 and all(e["recipient"] is None for e in erased)
    assert "p0@" not in text.lower()
    assert "p1@example.pl" in text
