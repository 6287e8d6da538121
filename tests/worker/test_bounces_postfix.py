"""A real MTA's bounces: mailer relays through a private Postfix, which takes each message
(250), then finds the recipient's server refusing it, writes the DSN itself and delivers it
to mailer's receiver through the message's VERP return path."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from tests.conftest import StartService
from tests.support.bounces import BOUNCE_DOMAIN, bounce_config
from tests.support.http import metric
from tests.support.jobs import receipt
from tests.support.postfix import PrivatePostfix, available, free_port
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually
from tests.worker.test_receipts import key_of, publish, settled

UNKNOWN = "nikt@example.pl"
BLOCKED = "anna.nowak@example.pl"


@pytest.fixture
def receiver_port() -> int:
    return free_port()


@pytest.fixture
def postfix(smtp_server: SmtpServer, receiver_port: int) -> Iterator[PrivatePostfix]:
    if not available():
        if os.environ.get("CI") == "true":
            pytest.fail("Postfix is not installed (CI=true: not skipping)")
        pytest.skip("Postfix is not installed, or the tests do not run as root")
    server = PrivatePostfix(
        {"example.pl": f"127.0.0.1:{smtp_server.port}", BOUNCE_DOMAIN: f"127.0.0.1:{receiver_port}"}
    )
    server.start()
    yield server
    server.stop()


async def bounced(db: asyncpg.Connection, delivery_id: int, postfix: PrivatePostfix) -> Any:
    async def probe() -> asyncpg.Record | None:
        return await db.fetchrow(
            "SELECT d.status, d.bounce_kind, d.bounce_status, d.bounce_diagnostic, r.raw, r.kind"
            " FROM deliveries d JOIN bounce_reports r ON r.delivery_id = d.id"
            " WHERE d.id = $1 AND r.classified_at IS NOT NULL",
            delivery_id,
        )

    try:
        return await eventually(probe, timeout=30)
    except AssertionError:
        raise AssertionError(f"no classified report; Postfix's log:\n{postfix.log()}") from None


async def test_postfix_dsns_suppress_a_hard_bounce_and_spare_a_policy_refusal(
    config: dict[str, Any],
    start_service: StartService,
    portal: Any,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    postfix: PrivatePostfix,
    receiver_port: int,
) -> None:
    smtp_server.rcpt_replies = {
        UNKNOWN: f"550 5.1.1 <{UNKNOWN}>: Recipient address rejected: User unknown",
        BLOCKED: "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using"
        " zen.spamhaus.org",
    }
    config["smtp"]["url"] = f"smtp://127.0.0.1:{postfix.port}?tls=none"
    config["bounces"] = bounce_config(listen=f"127.0.0.1:{receiver_port}")
    service = await start_service(config)

    ids = {}
    for address in (UNKNOWN, BLOCKED):
        job = receipt(to={"email": address, "name": "Ktoś"})
        await publish(portal, job)
        # Postfix took it (250); its DSN may be back already.
        assert (await settled(db, job["id"]))["status"] in ("sent", "bounced")
        ids[address] = await db.fetchval(
            "SELECT id FROM deliveries WHERE job_id = $1", UUID(job["id"])
        )

    hard = await bounced(db, ids[UNKNOWN], postfix)
    assert (hard["status"], hard["bounce_kind"], hard["bounce_status"]) == (
        "bounced",
        "hard",
        "5.1.1",
    )
    assert UNKNOWN not in hard["bounce_diagnostic"]
    # Postfix wrote it with our ENVID and returned the headers only (RET=HDRS).
    assert f"Original-Envelope-Id: {ids[UNKNOWN]}".encode() in hard["raw"]
    assert b"text/rfc822-headers" in hard["raw"]
    assert b"Reporting-MTA: dns; mx.postfix.test" in hard["raw"]
    reason = await db.fetchval(
        "SELECT reason FROM suppressions WHERE address_key = $1", key_of(UNKNOWN)
    )
    assert reason == "hard_bounce"

    policy = await bounced(db, ids[BLOCKED], postfix)
    assert (policy["status"], policy["bounce_kind"], policy["kind"]) == (
        "bounced",
        "policy",
        "policy",
    )
    assert (
        await db.fetchval(
            "SELECT count(*) FROM suppressions WHERE address_key = $1", key_of(BLOCKED)
        )
        == 0
    )
    assert await metric(service, "mailer_bounce_reports_total", kind="hard") == 1
    assert await metric(service, "mailer_bounce_reports_total", kind="policy") == 1

    # The next receipt to the unknown address is suppressed; the blocked one still goes (and
    # Postfix may have bounced it again by now).
    for address, expected in ((UNKNOWN, ("suppressed",)), (BLOCKED, ("sent", "bounced"))):
        job = receipt(to={"email": address, "name": "Ktoś"})
        await publish(portal, job)
        assert (await settled(db, job["id"]))["status"] in expected
