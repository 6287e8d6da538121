"""The `mailer` command as an operator runs it: real processes, real services."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import dkim

from mailer.adapters import database
from mailer.adapters.broker import Broker
from mailer.adapters.topology import DEAD_QUEUE
from mailer.core.addresses import address_key
from mailer.core.signing import load_key
from tests.conftest import ROOT, DkimKeys, StartService
from tests.support.jobs import encode, receipt
from tests.support.newsletters import HASH_KEY, issue, people, subscribe, until_state
from tests.support.processes import amailer, environment, free_port, mailer
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually


async def take(broker_url: str, queue_name: str) -> list[Any]:
    broker = Broker(broker_url)
    await broker.connect()
    try:
        channel = await broker.open_channel()
        queue = await channel.get_queue(queue_name, ensure=False)
        found = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            found.append(message)
        return found
    finally:
        await broker.close()


async def test_migrate_creates_schema_and_topology(
    empty_database_url: str, broker_url: str, config: dict[str, Any]
) -> None:
    config["database"]["url"] = empty_database_url
    result = await amailer("migrate", env=environment(config))
    assert result.returncode == 0, result.stderr
    assert "applied 0001_ledger" in result.stdout
    said = result.stdout + result.stderr  # what `scripts/run` shows of it
    for migration in database.migrations():
        name = f"{migration.version:04d}_{migration.name}"
        assert said.count(name) == 1, f"{name} reported {said.count(name)} times:\n{said}"
    assert "broker topology declared" in result.stdout
    again = await amailer("migrate", env=environment(config))
    assert again.returncode == 0
    assert "applied" not in again.stdout
    conn = await asyncpg.connect(empty_database_url)
    assert await conn.fetchval("SELECT to_regclass('deliveries') IS NOT NULL")
    await conn.close()


async def test_enqueue_publishes_the_file_byte_for_byte(
    config: dict[str, Any], broker_url: str, tmp_path: Path
) -> None:
    assert (await amailer("migrate", env=environment(config))).returncode == 0
    job = tmp_path / "job.json"
    job.write_bytes(encode(receipt(id="5f1c2a0e-8b1e-4c53-9a55-3f0c1e7d9a10")) + b"\n")
    result = await amailer("enqueue", str(job), env=environment(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "published 5f1c2a0e-8b1e-4c53-9a55-3f0c1e7d9a10 with routing key receipt"
    )
    (message,) = await take(broker_url, "mailer.receipts")
    assert message.body == job.read_bytes()
    assert message.message_id == "5f1c2a0e-8b1e-4c53-9a55-3f0c1e7d9a10"


async def test_enqueue_refuses_what_it_cannot_route(config: dict[str, Any]) -> None:
    assert (await amailer("migrate", env=environment(config))).returncode == 0
    unknown = await amailer(
        "enqueue", "--no-check", "-", env=environment(config), stdin=b'{"kind": "fax"}'
    )
    assert unknown.returncode == 1
    assert "no known 'kind' to route by" in unknown.stderr
    unroutable = await amailer(
        "enqueue", "--no-check", "--routing-key", "fax", "-", env=environment(config), stdin=b"{}"
    )
    assert unroutable.returncode == 1
    assert "unroutable (312 NO_ROUTE)" in unroutable.stderr


def test_enqueue_without_a_broker_fails_clearly(config: dict[str, Any], tmp_path: Path) -> None:
    config["broker"]["url"] = "amqp://guest:guest@127.0.0.1:1/"
    result = mailer("enqueue", "-", env=environment(config), stdin=encode(receipt()))
    assert result.returncode == 2
    assert result.stderr.startswith(
        "mailer: broker: cannot connect to amqp://guest:***@127.0.0.1:1/: "
    )
    assert "Traceback" not in result.stderr


async def test_dlq_list_requeue_and_purge(
    config: dict[str, Any],
    start_service: StartService,
    broker_url: str,
    smtp_server: SmtpServer,
) -> None:
    await start_service(config)
    env = environment(config)
    bad = encode(receipt(template="nope"))
    for body in (b"garbage", bad):
        assert (
            await amailer(
                "enqueue", "--no-check", "--routing-key", "receipt", "-", env=env, stdin=body
            )
        ).returncode == 0

    async def both_parked() -> bool:
        listed = await amailer("dlq", "list", "--json", env=env)
        return len(listed.stdout.splitlines()) == 2

    await eventually(both_parked, timeout=60)  # each look runs the CLI
    rows = [
        json.loads(line)
        for line in (await amailer("dlq", "list", "--json", env=env)).stdout.splitlines()
    ]
    reasons = sorted(r["reason"] for r in rows)
    assert reasons[0].startswith("body is not JSON")
    assert reasons[1] == "template: unknown template 'nope'"
    assert {r["origin"] for r in rows} == {"mailer.receipts"}
    human = (await amailer("dlq", "list", env=env)).stdout.splitlines()
    assert human[0].split() == ["REF", "JOB", "ID", "ORIGIN", "PARKED", "DELIVERIES", "REASON"]
    assert len(human) == 3
    assert any(line.endswith("  1  template: unknown template 'nope'") for line in human), human

    garbage = next(r for r in rows if r["reason"].startswith("body is not JSON"))
    purged = await amailer("dlq", "purge", garbage["ref"], env=env)
    assert purged.returncode == 0
    # a purge says what it deleted, never an arrow as if it had gone somewhere
    assert purged.stdout == (
        f"purged {garbage['ref']} {garbage['job_id']} (parked from mailer.receipts)\n"
    )
    requeued = await amailer("dlq", "requeue", "--all", env=env)
    assert requeued.returncode == 0
    assert "1 job(s) requeued" in requeued.stderr

    async def parked_again() -> bool:  # still invalid: the worker parks it once more
        listed = (await amailer("dlq", "list", "--json", env=env)).stdout.splitlines()
        return len(listed) == 1 and json.loads(listed[0])["reason"].startswith("template:")

    await eventually(parked_again, timeout=60)
    nothing = await amailer("dlq", "requeue", "no-such-ref", env=env)
    assert nothing.returncode == 1


def test_dkim_keygen_writes_a_private_key_and_prints_the_record(tmp_path: Path) -> None:
    out = tmp_path / "keys" / "mail2026.pem"
    env = {"PATH": os.environ["PATH"], "MAILER_CONFIG": str(ROOT / "config" / "mailer.toml")}
    result = mailer(
        "dkim",
        "keygen",
        "--domain",
        "lucid.example",
        "--selector",
        "mail2026",
        "--out",
        str(out),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key = load_key(out.read_bytes(), domain="lucid.example", selector="mail2026")
    record = result.stdout.strip()
    assert record.startswith('mail2026._domainkey.lucid.example. IN TXT ( "v=DKIM1; k=rsa; p=')
    strings = record.split("( ", 1)[1].rstrip(" )").split('" "')
    assert all(len(s.strip('"')) <= 255 for s in strings)
    assert "".join(s.strip('"') for s in strings) == key.dns_record()
    again = mailer(
        "dkim",
        "keygen",
        "--domain",
        "lucid.example",
        "--selector",
        "mail2026",
        "--out",
        str(out),
        env=env,
    )
    assert again.returncode == 1
    assert "exists" in again.stderr
    ed = mailer(
        "dkim",
        "keygen",
        "--type",
        "ed25519",
        "--domain",
        "lucid.example",
        "--selector",
        "e",
        "--out",
        str(tmp_path / "e.pem"),
        env=env,
    )
    assert "k=ed25519; p=" in ed.stdout


async def wait_for_http(port: int, process: subprocess.Popen[str]) -> None:
    async def healthy() -> bool:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/healthz") as response,
            ):
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(healthy, timeout=30)


async def test_run_with_the_embedded_capture_then_sigterm(
    config: dict[str, Any], tmp_path: Path, dkim_keys: DkimKeys, db: asyncpg.Connection
) -> None:
    """The quick start: no relay configured, messages land as .eml files."""
    del config["smtp"]["url"]
    port, admin_port = free_port(), free_port()
    config["http"]["port"] = port
    config["admin"]["port"] = admin_port
    outbox = tmp_path / "outbox"
    env = environment(config, MAILER_SMTP_CAPTURE_DIR=str(outbox), MAILER_SMTP_CAPTURE="true")
    assert (await amailer("migrate", env=env)).returncode == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "run"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await wait_for_http(port, process)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/readyz") as response,
        ):
            assert response.status == 200
            checks = (await response.json())["checks"]
            assert {name: check["ok"] for name, check in checks.items()} == dict.fromkeys(
                ("database", "broker", "consumers", "relay", "heartbeat", "events"), True
            )
        assert (
            await amailer("enqueue", str(ROOT / "examples" / "receipt.json"), env=env)
        ).returncode == 0

        async def captured() -> list[Path]:
            return sorted(outbox.glob("*.eml"))

        (eml,) = await eventually(captured)
        data = eml.read_bytes()
        assert dkim.DKIM(data).verify(dnsfunc=dkim_keys.dns)
        assert b"Subject: Potwierdzenie =?utf-8?q?zam=C3=B3wienia?= ZAM/2026/11/0042" in data

        async def recorded() -> str | None:
            status: str | None = await db.fetchval("SELECT status FROM deliveries")
            return status if status not in (None, "sending") else None

        assert await eventually(recorded) == "captured"  # never passes for delivery
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{admin_port}/metrics") as response,
        ):
            metrics = await response.text()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            assert response.status == 404  # only on the [admin] listener
        assert 'mailer_deliveries_total{kind="receipt",outcome="captured"} 1.0' in metrics
        assert 'outcome="sent"' not in metrics
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "mailer stopped" in stderr
    assert "kowalski" not in stderr.lower()  # addresses never in the log


def test_run_without_a_relay_refuses_to_start_unless_capture_is_asked_for(
    config: dict[str, Any], database_url: str
) -> None:
    del config["smtp"]["url"]
    config["http"]["port"] = free_port()
    env = environment(config)
    assert mailer("migrate", env=env).returncode == 0
    result = subprocess.run(
        [sys.executable, "-m", "mailer", "run"],
        env=env,
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("mailer: config: [smtp] url (MAILER_SMTP_URL): no relay configured")
    )


async def test_sigterm_finishes_or_returns_work_in_hand_and_loses_nothing(
    config: dict[str, Any],
    start_service: StartService,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    broker_url: str,
) -> None:
    smtp_server.data_delay = 0.3  # a slow relay: several receipts are in flight at SIGTERM
    port = free_port()
    config["http"]["port"] = port
    env = environment(config)
    assert (await amailer("migrate", env=env)).returncode == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "worker"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    jobs = [receipt(to={"email": f"buyer{n}@example.pl"}) for n in range(12)]
    try:
        portal = Broker(broker_url)
        await portal.connect()
        for job in jobs:
            await portal.publish(encode(job), routing_key="receipt")
        await portal.close()

        async def some_arrived() -> bool:
            return len(smtp_server.received) >= 2

        await eventually(some_arrived)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(process.communicate, timeout=30)
    assert process.returncode == 0, stderr
    assert len(smtp_server.received) < len(jobs)  # it stopped before finishing everything

    await start_service(config)  # another worker picks up what was returned

    async def all_sent() -> bool:
        count = await db.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'")
        return bool(count == len(jobs))

    await eventually(all_sent, timeout=30)
    recipients = sorted(r.rcpt_tos[0] for r in smtp_server.received)
    assert recipients == sorted(f"buyer{n}@example.pl" for n in range(12))  # each exactly once
    assert await take(broker_url, DEAD_QUEUE) == []


async def test_subscribers_import_reports_bad_rows_and_respects_opt_outs(
    config: dict[str, Any], db: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    await subscribe(database_url, [("left@example.pl", "Left", "pl")])
    await db.execute("UPDATE subscriptions SET status = 'unsubscribed'")
    await db.execute(
        "INSERT INTO suppressions (address_key, reason) VALUES ($1, 'complaint')",
        address_key(HASH_KEY, "angry@example.pl"),
    )
    csv_file = tmp_path / "people.csv"
    csv_file.write_text(
        "email;name;locale\n"
        "anna@example.pl;Anna Nowak;pl\n"
        "john@example.com;John Smith;en\n"
        "not-an-address;Broken;pl\n"
        "left@example.pl;Left;pl\n"
        "angry@example.pl;Angry;pl\n"
        "anna@example.pl;Anna again;pl\n"
        "eve@example.pl;Eve;de\n"
        "\n"
        "zofia@example.pl;;\n",
        encoding="utf-8",
    )
    result = await amailer(
        "subscribers", "import", str(csv_file), "--list", "lucid-news", env=environment(config)
    )
    assert result.returncode == 1, result.stderr  # bad rows: the rest imported, status 1
    assert result.stderr.splitlines() == [
        "line 4: not a valid e-mail address (An email address must have an @-sign.)",
        "line 8: locale: 'de' is not pl or en",
    ]
    assert result.stdout.strip() == (
        "8 rows: 3 subscribed, 0 already subscribed, 1 kept unsubscribed (they opted out), "
        "1 suppressed (bounced, complained or erased), 1 duplicate, 2 bad"
    )
    rows = await db.fetch(
        "SELECT s.email, s.name, s.locale, sub.status FROM subscribers s"
        " JOIN subscriptions sub ON sub.subscriber_id = s.id ORDER BY s.email"
    )
    assert [tuple(r) for r in rows] == [
        ("anna@example.pl", "Anna Nowak", "pl", "subscribed"),
        ("john@example.com", "John Smith", "en", "subscribed"),
        ("left@example.pl", "Left", "pl", "unsubscribed"),
        ("zofia@example.pl", None, None, "subscribed"),
    ]
    again = await amailer(
        "subscribers", "import", str(csv_file), "--list", "lucid-news", env=environment(config)
    )
    assert "0 subscribed, 3 already subscribed" in again.stdout
    unknown = await amailer(
        "subscribers", "import", str(csv_file), "--list", "nope", env=environment(config)
    )
    assert unknown.returncode == 2
    assert "no list 'nope'" in unknown.stderr


async def test_issue_status_pause_resume_cancel(
    config: dict[str, Any],
    start_service: StartService,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
    broker_url: str,
) -> None:
    # 200 people at 5 a second: 40 s of sending, longer than the commands below take.
    await subscribe(database_url, people(200))
    config["newsletter"] = {"rate": 5}
    await start_service(config)
    env = environment(config)
    job = issue()
    portal = Broker(broker_url)
    await portal.connect()
    await portal.publish(encode(job), routing_key="newsletter")
    await portal.close()

    async def recorded() -> bool:  # outcomes are written a chunk at a time
        sent = await db.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'")
        return bool(sent >= 10)

    await eventually(recorded)
    status = await amailer("issue", "status", job["id"], env=env)
    assert status.returncode == 0
    lines = status.stdout.splitlines()
    assert lines[0] == f"issue {job['id']} (list lucid-news): sending"
    assert lines[1].startswith("  total 200   sent ")
    found = re.fullmatch(
        r"  rate (\d+\.\d)/s over the last (minute|\d+ s), ETA (\d+ min ?)?(\d+ s)?", lines[2]
    )
    assert found is not None, lines[2]
    assert 0 < float(found[1]) <= 10  # the configured 5 per second, with a burst
    paused = await amailer("issue", "pause", job["id"], env=env)
    assert paused.stdout.strip() == f"issue {job['id']}: sending → paused"
    again = await amailer("issue", "pause", job["id"], env=env)
    assert again.returncode == 1
    assert f"issue {job['id']} is paused: cannot pause it" in again.stderr
    assert (await amailer("issue", "resume", job["id"], env=env)).returncode == 0
    cancelled = await amailer("issue", "cancel", job["id"], env=env)
    assert cancelled.stdout.strip() == f"issue {job['id']}: sending → cancelled"
    await until_state(db, job["id"], "cancelled")
    final = await amailer("issue", "status", "--watch", job["id"], env=env)
    assert final.returncode == 0
    assert "cancelled" in final.stdout.splitlines()[0]
    missing = await amailer("issue", "status", "00000000-0000-0000-0000-000000000000", env=env)
    assert missing.returncode == 1
    assert "no issue" in missing.stderr
