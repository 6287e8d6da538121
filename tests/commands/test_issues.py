"""`mailer issue list` and `issue status` as an operator runs them, against a real worker."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from mailer.adapters.broker import Broker
from tests.conftest import ROOT, StartService
from tests.support.jobs import encode
from tests.support.newsletters import issue, people, subscribe, until_state
from tests.support.processes import amailer, environment, free_port, start
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually


async def publish(broker_url: str, *jobs: dict[str, Any]) -> None:
    portal = Broker(broker_url)
    await portal.connect()
    try:
        for job in jobs:
            await portal.publish(encode(job), routing_key="newsletter")
    finally:
        await portal.close()


COUNTED = ("SENT", "CAPTURED", "BOUNCED", "SUPPRESSED", "FAILED", "CANCELLED", "LEFT")


def column(header: str, row: str, name: str) -> str:
    """A value of `mailer issue list`, under its column's name: times and text start where
    their name does, numbers end where theirs ends."""
    start = header.index(f"{name} ") if name != "SUBJECT" else header.index(name)
    if name in ("TOTAL", *COUNTED):
        return row[: start + len(name)].rsplit(maxsplit=1)[-1]
    end = header.index("  ", start + len(name))
    while header[end] == " ":
        end += 1
    return row[start:end].strip()


async def sent(db: asyncpg.Connection, at_least: int) -> bool:
    count = await db.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'")
    return bool(count >= at_least)


async def test_issue_list_shows_issues_newest_first_with_their_counts(
    config: dict[str, Any],
    start_service: StartService,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
    broker_url: str,
) -> None:
    await subscribe(database_url, people(5))
    await start_service(config)
    env = environment(config)
    done = issue(subject={"pl": "Listopad", "en": "November"})
    await publish(broker_url, done)
    await until_state(db, done["id"], "done")
    later = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    # A bidirectional override would reorder what the terminal shows after it.
    scheduled = issue(subject="Grudzień \u202egnirps", send_at=later)
    await publish(broker_url, scheduled)
    await until_state(db, scheduled["id"], "scheduled")

    listing = await amailer("issue", "list", env=env)
    assert listing.returncode == 0, listing.stderr
    header, first, second, *rest = listing.stdout.splitlines()
    assert rest == []
    assert header.split()[:3] == ["ISSUE", "STATE", "LIST"]
    assert first.startswith(f"{scheduled['id']}  scheduled  lucid-news")
    assert first.endswith("Grudzień \\u202egnirps")
    assert second.startswith(f"{done['id']}  done       lucid-news")
    assert second.endswith("  Listopad")  # the list's default locale, pl
    assert column(header, second, "TOTAL") == "5"
    assert [column(header, second, name) for name in COUNTED] == ["5", "0", "0", "0", "0", "0", "0"]
    # not started, not finished, no total yet
    assert [column(header, first, name) for name in ("STARTED", "FINISHED", "TOTAL")] == [
        "-",
        "-",
        "-",
    ]
    assert re.search(r" \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC ", second)  # the one format of time

    as_json = await amailer("issue", "list", "--json", "--state", "done", env=env)
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [row["id"] for row in rows] == [done["id"]]
    assert rows[0]["counts"] == {"sent": 5}
    assert rows[0]["subject"] == {"pl": "Listopad", "en": "November"}
    assert rows[0]["started_at"] is not None and rows[0]["finished_at"] is not None


async def test_captured_mail_is_counted_as_captured_by_list_and_status_alike(
    config: dict[str, Any],
    start_service: StartService,
    db: asyncpg.Connection,
    database_url: str,
    broker_url: str,
) -> None:
    """With no relay, the embedded capture server takes the mail: `issue list` and `issue
    status` both say captured 2, sent 0, and the same count under every other name."""
    del config["smtp"]["url"]
    config["smtp"]["capture"] = True
    await subscribe(database_url, people(2))
    await start_service(config)
    env = environment(config)
    job = issue()
    await publish(broker_url, job)
    await until_state(db, job["id"], "done")

    listing = await amailer("issue", "list", env=env)
    assert listing.returncode == 0, listing.stderr
    header, row = listing.stdout.splitlines()
    listed = {name.lower(): column(header, row, name) for name in COUNTED}
    assert listed == {
        "sent": "0",
        "captured": "2",
        "bounced": "0",
        "suppressed": "0",
        "failed": "0",
        "cancelled": "0",
        "left": "0",
    }, listing.stdout

    status = await amailer("issue", "status", job["id"], env=env)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[1] == (
        "  total 2   sent 0   captured 2   bounced 0   suppressed 0   failed 0   cancelled 0"
        "   pending 0   sending 0   retrying 0"
    ), status.stdout
    said = dict(re.findall(r"(\w+) (\d+)", lines[1]))
    assert {name: said[name] for name in listed if name != "left"} == {
        name: n for name, n in listed.items() if name != "left"
    }
    assert re.fullmatch(r"  finished at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", lines[2]), lines


async def test_a_scheduled_issue_says_when_it_starts_in_the_one_format_of_time(
    config: dict[str, Any],
    start_service: StartService,
    db: asyncpg.Connection,
    broker_url: str,
) -> None:
    await start_service(config)
    env = environment(config)
    job = issue(send_at="2030-01-02T09:30:00+01:00")
    await publish(broker_url, job)
    await until_state(db, job["id"], "scheduled")
    status = await amailer("issue", "status", job["id"], env=env)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[1] == "  starts at 2030-01-02 08:30:00 UTC", status.stdout
    assert re.fullmatch(r"  measured at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", lines[-1])


def stop(process: subprocess.Popen[str], how: signal.Signals) -> str:
    process.send_signal(how)
    _, stderr = process.communicate(timeout=60)
    return stderr


async def test_status_says_stalled_when_no_worker_is_alive_and_recovers_with_one(
    config: dict[str, Any],
    start_service: StartService,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
    broker_url: str,
) -> None:
    await subscribe(database_url, people(300))
    config["http"]["port"] = free_port()
    config["newsletter"] = {"rate": 20}
    env = environment(config)
    assert (await amailer("migrate", env=env)).returncode == 0
    worker = start("worker", env=env)
    job = issue()
    try:
        await publish(broker_url, job)
        await eventually(lambda: sent(db, 20), timeout=60)
        running = await amailer("issue", "status", job["id"], env=env)
        assert re.match(r"  rate \d+\.\d/s over the last ", running.stdout.splitlines()[2])
    finally:
        await asyncio.to_thread(stop, worker, signal.SIGKILL)

    async def stalled() -> str | None:  # once the dead process has been silent for a lease
        status = await amailer("issue", "status", job["id"], env=env)
        line = status.stdout.splitlines()[2]
        return line if "stalled" in line else None

    line = await eventually(stalled, timeout=20, interval=0.5)
    assert re.fullmatch(
        r"  stalled: no worker process is alive; the last send was \d+ s ago", line
    ), line
    status = (await amailer("issue", "status", job["id"], env=env)).stdout
    assert "rate" not in status and "ETA" not in status
    assert re.search(r"\n  measured at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", status)

    await start_service(config)  # a worker again: sending resumes, and so does the rate

    async def moving() -> str | None:
        line = (await amailer("issue", "status", job["id"], env=env)).stdout.splitlines()[2]
        return line if line.startswith("  rate ") else None

    line = await eventually(moving, timeout=30, interval=0.5)
    assert float(re.findall(r"[\d.]+", line)[0]) <= 40
    assert (await amailer("issue", "cancel", job["id"], env=env)).returncode == 0


async def test_watch_started_mid_issue_shows_the_ledger_rate_and_the_worker_logs_changes(
    config: dict[str, Any],
    start_service: StartService,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
    broker_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mailer.worker")
    await subscribe(database_url, people(300))
    config["newsletter"] = {"rate": 20}
    await start_service(config)
    env = environment(config)
    job = issue()
    await publish(broker_url, job)
    await eventually(lambda: sent(db, 60), timeout=60)  # well under way when the watch starts
    watcher = subprocess.Popen(
        [sys.executable, "-m", "mailer", "issue", "status", "--watch", job["id"]],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await asyncio.sleep(3)  # a few refreshes of the bar
        assert (await amailer("issue", "pause", job["id"], env=env)).returncode == 0
        await asyncio.sleep(1.5)
        assert (await amailer("issue", "resume", job["id"], env=env)).returncode == 0
        assert (await amailer("issue", "cancel", job["id"], env=env)).returncode == 0
        out, bar = await asyncio.to_thread(watcher.communicate, timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate(timeout=30)
    assert watcher.returncode == 0, bar
    assert "cancelled" in out.splitlines()[0]
    frames = [frame for frame in re.split(r"[\r\n]", bar) if frame.strip()]
    rates = [float(r.replace(",", "")) for r in re.findall(r"rate ([\d,.]+)/s", bar)]
    assert rates, frames
    assert max(rates) <= 40, frames  # the configured 20 a second, with a burst
    assert any(re.search(r"\| \d+/300, paused\s*$", f) for f in frames), frames
    assert "msg/s" not in bar and "it/s" not in bar  # no rate of what this viewer saw change

    await until_state(db, job["id"], "cancelled")
    logged = [r.getMessage() for r in caplog.records if r.name == "mailer.worker.signals"]
    issue_id = job["id"]
    assert f"issue {issue_id} paused" in logged
    assert f"issue {issue_id} resumed: sending" in logged
    assert f"issue {issue_id} cancelled" in logged
    assert logged.index(f"issue {issue_id} paused") < logged.index(f"issue {issue_id} cancelled")
