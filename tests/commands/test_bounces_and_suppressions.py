"""`mailer suppressions …` and `mailer bounces …` as an operator runs them: real processes,
the test's own database; addresses are typed, never printed."""

from __future__ import annotations

import asyncio
import signal
from datetime import date
from typing import Any
from uuid import UUID

import asyncpg

from mailer.core.addresses import address_key, address_ref
from mailer.core.return_paths import ReturnPathKeys, return_path
from tests.conftest import SECRET
from tests.support.bounces import BOUNCE_DOMAIN, dsn, send_report
from tests.support.newsletters import HASH_KEY
from tests.support.processes import amailer, environment, free_port, start
from tests.support.waiting import eventually

ADDRESS = "jan.kowalski@example.pl"
REF = address_ref(address_key(HASH_KEY, ADDRESS))


async def test_add_show_list_and_lift_a_suppression(
    config: dict[str, Any], db: asyncpg.Connection
) -> None:
    env = environment(config)
    added = await amailer("suppressions", "add", "Jan.Kowalski@Example.pl", env=env)
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == f"{REF}: suppressed"
    reason = await db.fetchval(
        "SELECT reason FROM suppressions WHERE address_key = $1", address_key(HASH_KEY, ADDRESS)
    )
    assert reason == "manual"

    shown = await amailer("suppressions", "show", ADDRESS, env=env)
    assert shown.returncode == 0 and shown.stdout.startswith(f"{REF}  manual")
    listed = await amailer("suppressions", "list", env=env)
    assert REF in listed.stdout and "1 suppression(s) shown" in listed.stderr
    by_ref = await amailer("suppressions", "show", REF, env=env)
    assert by_ref.stdout == shown.stdout
    for result in (added, shown, listed, by_ref):
        assert ADDRESS not in result.stdout + result.stderr

    lifted = await amailer("suppressions", "lift", ADDRESS, env=env)
    assert lifted.stdout.strip() == f"{REF}: manual suppression lifted"
    assert await db.fetchval("SELECT count(*) FROM suppressions") == 0
    gone = await amailer("suppressions", "show", ADDRESS, env=env)
    assert (gone.returncode, gone.stdout.strip()) == (1, f"{REF}: not suppressed")

    await db.execute(
        "INSERT INTO suppressions (address_key, reason) VALUES ($1, 'erased')",
        address_key(HASH_KEY, ADDRESS),
    )
    kept = await amailer("suppressions", "lift", ADDRESS, env=env)
    assert kept.returncode == 1  # an erasure is never lifted
    assert await db.fetchval("SELECT count(*) FROM suppressions") == 1
    bad = await amailer("suppressions", "add", "not-an-address", env=env)
    assert bad.returncode == 1 and "not a valid e-mail address" in bad.stderr


async def test_bounces_serve_receives_reports_and_list_and_show_them(
    config: dict[str, Any], db: asyncpg.Connection
) -> None:
    await db.execute(
        "INSERT INTO jobs (id, kind, digest) VALUES ($1, 'receipt', '\\x00')", UUID(int=7)
    )
    delivery_id: int = await db.fetchval(
        "INSERT INTO deliveries (job_id, recipient_key, status) VALUES ($1, $2, 'sent')"
        " RETURNING id",
        UUID(int=7),
        address_key(HASH_KEY, ADDRESS),
    )
    port = free_port()
    env = environment(
        config, MAILER_BOUNCES_DOMAIN=BOUNCE_DOMAIN, MAILER_BOUNCES_LISTEN=f"127.0.0.1:{port}"
    )
    without = await amailer("bounces", "serve", env=environment(config))
    assert without.returncode == 2 and "[bounces] domain" in without.stderr

    process = start("bounces", "serve", env=env)
    try:
        verp = return_path(
            ReturnPathKeys.from_secrets(SECRET.encode()),
            delivery_id,
            date.today(),
            BOUNCE_DOMAIN,
        )

        async def answer() -> Any:
            try:
                return await send_report(port, verp, dsn(verp, ADDRESS))
            except OSError:
                return None

        reply = await eventually(answer, timeout=30)
        assert reply.code == 250, reply

        async def done() -> bool:
            status = await db.fetchval("SELECT status FROM deliveries WHERE id = $1", delivery_id)
            return bool(status == "bounced")

        await eventually(done, timeout=15)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(process.communicate, timeout=30)
    assert process.returncode == 0, stderr
    assert ADDRESS not in stderr

    listed = await amailer("bounces", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "hard" in listed.stdout and f"delivery {delivery_id}" in listed.stdout
    assert "bounced; address suppressed for everything" in listed.stdout
    assert "example.pl" in listed.stdout  # counted by destination domain
    report_id = int(listed.stdout.split()[0])
    shown = await amailer("bounces", "show", str(report_id), "--raw", env=env)
    assert "kind:        hard" in shown.stdout
    assert "status:      5.1.1" in shown.stdout
    assert 'evidence:    Diagnostic-Code says "user unknown"' in shown.stdout
    assert "Final-Recipient" in shown.stdout  # the raw report, on request
    plain = await amailer("bounces", "show", str(report_id), env=env)
    assert ADDRESS not in plain.stdout
    missing = await amailer("bounces", "show", "999999", env=env)
    assert missing.returncode == 1
