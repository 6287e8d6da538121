"""`mailer enqueue` refuses, before publishing, a job the worker would park; `mailer dlq`
says so when a ref names nothing. The real command against real RabbitMQ."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aio_pika

from mailer.adapters.broker import Broker
from mailer.adapters.parked import body_ref
from mailer.adapters.topology import DEAD_QUEUE
from tests.support.jobs import encode, receipt
from tests.support.newsletters import issue
from tests.support.processes import amailer, environment

QUEUES = ("mailer.receipts", "mailer.newsletters", "mailer.subscriptions", DEAD_QUEUE)


async def depths(broker_url: str) -> dict[str, int]:
    broker = Broker(broker_url)
    await broker.connect()
    try:
        channel = await broker.open_channel()
        found = {}
        for name in QUEUES:
            queue = await channel.declare_queue(name, passive=True)
            found[name] = queue.declaration_result.message_count or 0
        return found
    finally:
        await broker.close()


async def test_enqueue_refuses_a_bad_job_in_one_line_and_publishes_nothing(
    config: dict[str, Any], broker_url: str, tmp_path: Path
) -> None:
    env = environment(config)
    assert (await amailer("migrate", env=env)).returncode == 0
    job = tmp_path / "job.json"
    injected = receipt()
    injected["to"]["name"] = "Jan\r\nBcc: victim@example.com"
    cases: list[tuple[bytes, str]] = [
        (b"kind: receipt\n", "body is not JSON (Expecting value: line 1 column 1 (char 0))"),
        (b"\xff\xfe{}", "body is not UTF-8"),
        (b"[1, 2]", "body is not a JSON object"),
        (
            b'{"kind": "fax"}',
            "kind: unknown kind 'fax'; expected one of receipt, newsletter, subscription",
        ),
        (
            encode({**receipt(), "version": 2}),
            "version: receipt jobs of version 2 are not supported (1 is)",
        ),
        (encode({k: v for k, v in receipt().items() if k != "to"}), "to: is required"),
        (encode(receipt(to={"email": "not-an-address"})), "to.email: "),
        (encode(injected), "to.name: "),
        (encode(receipt(surprise=1)), "surprise: is not a field of this job"),
        (encode(issue(list="no-such-list")), "list: no list 'no-such-list' is configured"),
        (
            encode(
                issue(data={"articles": [{"title": "x", "body_html": "", "url": "javascript:x"}]})
            ),
            "template newsletter/pl: link 'javascript:x' must be an http(s) or mailto URL",
        ),
        (
            encode(issue(data={"en": {"articles": []}})),
            "data: needs the list's default locale 'pl'",
        ),
        (encode(receipt(template="nope")), "template: unknown template 'nope'"),
        (
            encode(receipt(data={"order_number": "1"})),
            "template receipt/pl: 'placed_at' is undefined",
        ),
        (
            encode(
                {
                    "kind": "subscription",
                    "version": 1,
                    "id": "3b6f1d2a-77c4-4d0e-9a1b-5c2e8f0a4d17",
                    "action": "subscribe",
                    "list": "nope",
                    "email": "a@example.pl",
                }
            ),
            "list: no list 'nope' is configured",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "body: nested deeper than 32 levels"),
    ]
    for body, reason in cases:
        job.write_bytes(body)
        result = await amailer("enqueue", str(job), env=env)
        assert result.returncode == 1, (body[:40], result.stdout)
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"mailer: {job}: not a valid job, nothing published: {reason}")
        assert "victim@" not in result.stderr
    from_stdin = await amailer("enqueue", "-", env=env, stdin=b"not json")
    assert from_stdin.stderr.startswith(
        "mailer: -: not a valid job, nothing published: body is not JSON"
    )
    assert await depths(broker_url) == dict.fromkeys(QUEUES, 0)

    job.write_bytes(encode(issue()))
    ok = await amailer("enqueue", str(job), env=env)
    assert ok.returncode == 0, ok.stderr
    assert (await depths(broker_url))["mailer.newsletters"] == 1
    forced = await amailer(
        "enqueue", "--no-check", "--routing-key", "receipt", "-", env=env, stdin=b"x"
    )
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.strip() == f"published {body_ref(b'x')} with routing key receipt"
    assert (await depths(broker_url))["mailer.receipts"] == 1


async def test_dlq_requeue_and_purge_of_an_unknown_ref_say_so(
    config: dict[str, Any], broker_url: str
) -> None:
    """Jobs left in mailer.dead (parked while the database was away, no worker running since)
    are moved into the table by `mailer migrate`; then `mailer dlq` acts on them."""
    env = environment(config)
    assert (await amailer("migrate", env=env)).returncode == 0
    connection = await aio_pika.connect(broker_url)
    async with connection:
        channel = await connection.channel()
        for body in (b"first", b"second"):
            await channel.default_exchange.publish(
                aio_pika.Message(body, headers={"x-mailer-origin-queue": "mailer.receipts"}),
                routing_key=DEAD_QUEUE,
            )
    moved = await amailer("migrate", env=env)
    assert moved.returncode == 0, moved.stderr
    assert "moved 2 parked job(s) from mailer.dead into the database" in moved.stdout
    assert (await depths(broker_url))[DEAD_QUEUE] == 0
    for action in ("requeue", "purge"):
        result = await amailer("dlq", action, "no-such-ref", env=env)
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            f"0 job(s) {action}d",
            f"mailer: dlq {action}: no parked job 'no-such-ref' (see `mailer dlq list`)",
        ]

    mixed = await amailer("dlq", "purge", body_ref(b"first"), "deadbeef0000", env=env)
    assert mixed.returncode == 1
    assert re.fullmatch(
        rf"purged {body_ref(b'first')} \S+ \(parked from mailer\.receipts\)\n", mixed.stdout
    )
    assert mixed.stderr.splitlines()[-1] == (
        "mailer: dlq purge: no parked job 'deadbeef0000' (see `mailer dlq list`)"
    )
    listed = await amailer("dlq", "list", "--json", env=env)
    assert [json.loads(line)["ref"] for line in listed.stdout.splitlines()] == [body_ref(b"second")]
    requeued = await amailer("dlq", "requeue", body_ref(b"second"), env=env)
    assert requeued.returncode == 0, requeued.stderr
    assert re.fullmatch(
        rf"requeued {body_ref(b'second')} \S+ → mailer\.receipts\n", requeued.stdout
    )
    assert await depths(broker_url) == {**dict.fromkeys(QUEUES, 0), "mailer.receipts": 1}
    empty = await amailer("dlq", "purge", "--all", env=env)
    assert empty.returncode == 0
