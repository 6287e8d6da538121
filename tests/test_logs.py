"""The log as a log shipper reads it: one record per line, whatever a job or a broker
message carries. A real worker process, its standard error captured."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import signal
from typing import Any

import aio_pika
import asyncpg

from mailer import logs
from mailer.adapters.topology import DEAD_QUEUE
from tests.support.processes import amailer, environment, start
from tests.support.waiting import eventually

# A record as mailer writes it: its time, level and logger, at the start of a line.
RECORD = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
FORGED = "2026-12-07T11:49:58.000Z INFO mailer.x receipt sent job=forged"
# Every character that ends a line for some reader: LF, CR, NEL, U+2028, U+2029.
BREAKS = ("\n", "\r", "\x85", "\u2028", "\u2029")


def check_lines(text: str) -> list[str]:
    """The log's lines, each a record or a record's indented continuation."""
    for breaker in BREAKS[1:]:
        assert breaker not in text, f"{breaker!r} written raw"
    lines = text.split("\n")
    for line in lines:
        assert not line or RECORD.match(line) or line.startswith("  "), line
    return lines


async def test_a_hostile_message_id_and_headers_forge_no_log_line(
    config: dict[str, Any], broker_url: str, database_url: str
) -> None:
    """Fault: a job whose AMQP message id holds LF, CR, NEL, U+2028 and U+2029 each
    followed by a complete fake record, and a message in mailer.dead whose origin queue and
    reason headers do the same. Figures: forged lines 0; the values are still in the log,
    escaped, on the line of the record that logged them."""
    env = environment(config)
    assert (await amailer("migrate", env=env)).returncode == 0
    worker = start("worker", env=env)
    try:
        connection = await aio_pika.connect(broker_url)
        async with connection:
            channel = await connection.channel()
            await channel.default_exchange.publish(
                aio_pika.Message(
                    b'{"kind": "fax"}',
                    message_id="id" + "".join(f"{b}{FORGED[:40]}" for b in BREAKS),
                ),
                routing_key="mailer.receipts",
            )
            await channel.default_exchange.publish(
                aio_pika.Message(
                    b"from an old worker",
                    headers={
                        "x-mailer-origin-queue": f"mailer.receipts\n{FORGED}",
                        "x-mailer-reason": f"bad\r\n{FORGED}\u2028{FORGED}",
                    },
                ),
                routing_key=DEAD_QUEUE,
            )
        conn = await asyncpg.connect(database_url)
        try:

            async def both_parked() -> bool:
                return bool(await conn.fetchval("SELECT count(*) FROM parked_jobs") == 2)

            await eventually(both_parked, timeout=30)
        finally:
            await conn.close()
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(worker.communicate, timeout=60)
    lines = check_lines(stderr)
    assert not [line for line in lines if FORGED[:24] in line[:30]]
    parked = [line for line in lines if "parked job=id" in line]
    assert len(parked) == 1, stderr
    assert "\\n2026-12-07T11:49:58.000Z INFO" in parked[0]
    assert "\\u2028" in parked[0] and "\\x85" in parked[0]
    moved = [line for line in lines if "mailer.dead: job" in line]
    assert len(moved) == 1 and "\\r\\n2026-12-07" in moved[0], stderr


def test_an_exception_text_cannot_start_a_record_either() -> None:
    """A traceback is indented under its record: an exception's text with a line break and
    a fake record stays inside it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.formatter())
    log = logging.getLogger("tests.logs")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise ValueError(f"bad\n{FORGED}")
        except ValueError:
            log.exception("failed for job=%s", f"x\r{FORGED}")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    lines = check_lines(out.getvalue())
    assert lines[0].endswith(f"ERROR tests.logs failed for job=x\\r{FORGED}")
    assert f"  {FORGED}" in lines
    assert sum(1 for line in lines if RECORD.match(line)) == 1
