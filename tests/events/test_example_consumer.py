"""examples/events_consumer.py, run as a portal would run it, against a real broker: it
prints each message event once, drops a repeat by id, and is not sent other events."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from mailer.adapters import outbox
from mailer.adapters.broker import Broker
from mailer.core.events import StoredEvent, body

ROOT = Path(__file__).resolve().parents[2]


def stored(position: int, type_: str, account: str, recipient: str | None) -> StoredEvent:
    event = outbox.event(
        type_,  # type: ignore[arg-type]
        account=account,
        kind="receipt",
        recipient=recipient,
        detail={"reply": "250 ok"},
        at=datetime(2026, 12, 7, 10, 15, tzinfo=UTC),
    )
    return StoredEvent(position, event.id, event.type, event.occurred_at, account, body(event))


async def test_the_example_consumer_prints_each_message_event_once(
    broker_url: str, portal: Broker
) -> None:
    await portal.declare([200])
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "examples" / "events_consumer.py"),
        broker_url,
        "--queue",
        "test.portal",
        "--stop-after",
        "3",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        first = await asyncio.wait_for(process.stdout.readline(), 30)
        assert first.decode() == "consuming test.portal bound to mailer.events for *.message.*\n"
        delivered = stored(1, "message.delivered", "acme", "jan.kowalski@example.pl")
        published = [
            delivered,
            stored(2, "issue.started", "acme", None),  # not a message event: not bound
            delivered,  # a repeat
            stored(3, "message.bounced", "lucid", "ola@example.pl"),
            stored(4, "message.deferred", "default", "x@example.pl"),
        ]
        for event in published:
            await portal.publish_event(event)
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines == [
        "2026-12-07T10:15:00.000Z message.delivered account=acme"
        ' job=None recipient=jan.kowalski@example.pl detail={"reply": "250 ok"}',
        f"repeat {delivered.id} dropped",
        "2026-12-07T10:15:00.000Z message.bounced account=lucid"
        ' job=None recipient=ola@example.pl detail={"reply": "250 ok"}',
        "2026-12-07T10:15:00.000Z message.deferred account=default"
        ' job=None recipient=x@example.pl detail={"reply": "250 ok"}',
    ]
