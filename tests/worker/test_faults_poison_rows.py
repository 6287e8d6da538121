"""One delivery that can never be composed must end failed, once, and not hold up its issue.

The subscriber's name comes from an import. One with bare CR/LF, written into the table
by another tool past the import's checks, cannot go into a To header: it fails once. One
that merely looks like an RFC 2047 encoded-word hiding CR/LF is text: it is sent, shown
literally, with no header injected.
"""

from __future__ import annotations

import email
import email.policy
import logging
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from mailer.adapters.broker import Broker
from tests.conftest import StartService
from tests.support.copies import copies, figures
from tests.support.deadlines import reached
from tests.support.jobs import encode
from tests.support.newsletters import issue, issue_state, outcomes, people, subscribe
from tests.support.smtp import SmtpServer

VICTIM = "wstrzykniety@example.pl"
ENCODED = "=?utf-8?q?=0D=0ABcc:_all@evil.example?="


@pytest.mark.parametrize("raw", [False, True], ids=["encoded-word", "bare-crlf"])
async def test_a_row_with_a_hostile_name_ends_once_and_the_issue_finishes(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    raw: bool,
) -> None:
    """A subscriber whose row cannot become a message: that delivery is 'failed' with a
    reason (not sent back to 'pending' for the dispatcher to spin on), a handful of log
    lines at most, nobody else held up, the issue done; and nobody gets a Bcc injected."""
    audience = people(10)
    await subscribe(database_url, [*audience, (VICTIM, ENCODED, "pl")])
    if raw:  # as another tool might have written it, past the import's checks
        await db.execute(
            "UPDATE subscribers SET name = $2 WHERE email = $1", VICTIM, "Jan\r\nBcc: all@evil"
        )
    await start_service(config)
    job = issue()
    with caplog.at_level(logging.ERROR):
        await portal.publish(encode(job), routing_key="newsletter")

        async def done() -> bool:
            return await issue_state(db, job["id"]) == "done"

        finished = await reached(done, timeout=8)
    errors = sum(1 for record in caplog.records if record.levelno >= logging.ERROR)
    row = await db.fetchrow(
        "SELECT d.status, d.detail, d.attempts FROM deliveries d"
        " JOIN subscribers s ON s.id = d.subscriber_id WHERE d.job_id = $1 AND s.email = $2",
        UUID(job["id"]),
        VICTIM,
    )
    wanted = [email for email, _, _ in audience]
    summary = (
        f"issue done within 8 s: {finished}; {errors} error log lines; poisoned row {dict(row)};"
        f" {figures(smtp_server.received, wanted)}; ledger {await outcomes(db, job['id'])}"
    )
    assert finished, summary
    assert errors <= 5, summary
    if raw:
        assert row["status"] == "failed" and row["detail"], summary
        assert "cannot be composed" in row["detail"], summary
        assert await outcomes(db, job["id"]) == {"sent": 10, "failed": 1}, summary
        assert copies(smtp_server.received) == {email: 1 for email in wanted}, summary
    else:  # encoded again by our writer: a client shows the name exactly as typed
        assert (row["status"], row["attempts"]) == ("sent", 1), summary
        assert await outcomes(db, job["id"]) == {"sent": 11}, summary
        assert copies(smtp_server.received) == {email: 1 for email in [*wanted, VICTIM]}
        (victim,) = [m for m in smtp_server.received if m.rcpt_tos == (VICTIM,)]
        message = email.message_from_bytes(victim.data, policy=email.policy.default)
        assert message["To"].addresses[0].display_name == ENCODED, victim.data[:400]
    assert all(b"\nBcc:" not in message.data for message in smtp_server.received)
