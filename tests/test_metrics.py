"""/metrics as Prometheus scrapes it from a running mailer: queues, issues, the relay, the
database and the broker, the worker processes, subscriptions, process and build facts."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from mailer.adapters.broker import Broker
from mailer.build import VERSION
from mailer.service import Service
from tests.conftest import StartService
from tests.support.http import admin_url, base_url
from tests.support.jobs import encode, receipt
from tests.support.newsletters import issue, people, subscribe, until_state
from tests.support.processes import amailer, environment, free_port
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

UNSUBSCRIBE = re.compile(rb"\r\nList-Unsubscribe: <https://mail\.lucid\.example(/u/[\w-]+)>\r\n")
STILL_TO_SEND = ("pending", "sending", "retrying")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(service: Service) -> tuple[str, Samples]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(admin_url(service) + "/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def names(samples: Samples) -> Iterator[str]:
    return (name for name, _ in samples)


async def test_metrics_show_queues_issues_subscriptions_and_the_process(
    config: dict[str, Any],
    start_service: StartService,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
    portal: Broker,
) -> None:
    await subscribe(database_url, people(40))
    config["newsletter"] = {"rate": 10}
    service = await start_service(config, sample_interval=0.2)
    job = issue()
    await portal.publish(encode(job), routing_key="newsletter")
    await portal.publish(b"{not json", routing_key="receipt")  # parked
    await portal.publish(encode(receipt()), routing_key="receipt")

    async def some_sent() -> bool:
        return len(smtp_server.received) >= 11  # the receipt and ten of the issue

    await eventually(some_sent, timeout=30)
    env = environment(config)
    assert (await amailer("issue", "pause", job["id"], env=env)).returncode == 0
    paused_at = time.time()
    newsletter = next(m for m in smtp_server.received if UNSUBSCRIBE.search(m.data))
    found = UNSUBSCRIBE.search(newsletter.data)
    assert found is not None
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            base_url(service) + found[1].decode(), data={"List-Unsubscribe": "One-Click"}
        ) as response,
    ):
        assert response.status < 300
    issue_id = job["id"]

    async def sampled_paused() -> Samples | None:
        _, samples = await scrape(service)
        sent = await db.fetchval(
            "SELECT count(*) FROM deliveries WHERE job_id = $1 AND status = 'sent'",
            uuid.UUID(issue_id),
        )
        shown = value(samples, "mailer_issue_deliveries", issue=issue_id, list="lucid-news",
                      status="sent")  # fmt: skip
        dead = value(samples, "mailer_parked_jobs", origin="mailer.receipts")
        # Read after the pause: one from before it could show the same counts, and a rate.
        read_at = value(samples, "mailer_metrics_sampled_timestamp_seconds", part="issues")
        fresh = read_at is not None and read_at > paused_at
        return samples if shown == sent and dead == 1 and fresh else None

    samples = await eventually(sampled_paused, timeout=20)
    text, _ = await scrape(service)
    assert "@" not in text  # never an address, in a label or anywhere
    labels = {"issue": issue_id, "list": "lucid-news"}
    left = value(samples, "mailer_issue_deliveries", status="pending", **labels)
    assert left is not None and left > 0
    assert value(samples, "mailer_issue_stalled", **labels) == 0  # paused is not stalled
    assert value(samples, "mailer_issue_send_rate", **labels) == 0
    assert value(samples, "mailer_queue_consumers", queue="mailer.receipts") == 1
    assert value(samples, "mailer_queue_consumers", queue="mailer.dead") == 1  # the mover
    assert value(samples, "mailer_queue_messages", queue="mailer.dead") == 0  # moved
    assert value(samples, "mailer_parked_jobs", origin="unknown") == 0
    assert value(samples, "mailer_queue_messages", queue="mailer.receipts") == 0
    assert value(samples, "mailer_queue_messages", queue="mailer.delay.200ms") == 0
    assert value(samples, "mailer_database_up") == 1
    assert value(samples, "mailer_broker_up") == 1
    assert value(samples, "mailer_relay_up") == 1
    assert value(samples, "mailer_relay_failures_total", **{"class": "connection"}) == 0
    assert value(samples, "mailer_workers", presence="alive") == 1
    assert value(samples, "mailer_workers", presence="gone") == 0
    assert value(samples, "mailer_unsubscribes_total", source="one-click") == 1
    assert value(samples, "mailer_unsubscribes_total", source="page") == 0
    assert value(samples, "mailer_confirmations_total") == 0
    assert value(samples, "mailer_deliveries_total", kind="receipt", outcome="sent") == 1
    assert value(samples, "mailer_jobs_parked_total", queue="mailer.receipts") == 1
    build = [dict(labels) for name, labels in samples if name == "mailer_build_info"]
    assert [b["version"] for b in build] == [VERSION]
    assert (value(samples, "mailer_worker_heartbeat_timestamp_seconds") or 0) > 1.7e9
    # A receipt sent: its event published by this process's relay, none waiting.
    assert (value(samples, "mailer_events_published_total") or 0) >= 1
    assert value(samples, "mailer_events_relay_leader") == 1
    assert value(samples, "mailer_events_backlog") is not None
    for part in ("database", "queues", "parked", "workers", "events", "issues"):
        sampled = value(samples, "mailer_metrics_sampled_timestamp_seconds", part=part)
        assert (sampled or 0) > 1.7e9, part
    assert (value(samples, "process_resident_memory_bytes") or 0) > 0
    assert "process_cpu_seconds_total" in set(names(samples))

    # Once done (cancelled here), an issue leaves the gauges: active issues only.
    assert (await amailer("issue", "cancel", issue_id, env=env)).returncode == 0
    await until_state(db, issue_id, "cancelled")

    async def gone() -> bool:
        _, samples = await scrape(service)
        return not any(name.startswith("mailer_issue_") for name in names(samples))

    await eventually(gone, timeout=10)


async def test_metrics_show_the_relay_failing_and_an_issue_stalled_without_workers(
    config: dict[str, Any],
    start_service: StartService,
    database_url: str,
    db: asyncpg.Connection,
    portal: Broker,
) -> None:
    await subscribe(database_url, people(5))
    config["smtp"]["url"] = f"smtp://127.0.0.1:{free_port()}?tls=none"  # nobody listens
    worker = await start_service(config, sample_interval=0.2)
    for _ in range(3):
        await portal.publish(encode(receipt()), routing_key="receipt")
    job = issue()
    await portal.publish(encode(job), routing_key="newsletter")
    await until_state(db, job["id"], "sending")

    async def relay_down() -> Samples | None:
        _, samples = await scrape(worker)
        failures = value(samples, "mailer_relay_failures_total", **{"class": "connection"})
        return samples if failures and failures >= 3 else None

    samples = await eventually(relay_down, timeout=30)
    assert value(samples, "mailer_relay_up") == 0
    assert value(samples, "mailer_relay_failures_total", **{"class": "auth"}) == 0

    async def held() -> bool:  # the issue's messages wait for a retry: waiting, not stalled
        held: int = await db.fetchval(
            "SELECT count(*) FROM deliveries WHERE job_id = $1 AND status = 'retrying'",
            uuid.UUID(job["id"]),
        )
        return held == 5

    await eventually(held, timeout=30)
    await worker.stop()  # no worker process is left; a web service alone still reports
    web = await start_service(config, run_worker=False, sample_interval=0.2)
    labels = {"issue": job["id"], "list": "lucid-news"}

    async def stalled() -> Samples | None:
        _, samples = await scrape(web)
        return samples if value(samples, "mailer_issue_stalled", **labels) == 1 else None

    samples = await eventually(stalled, timeout=20)
    assert value(samples, "mailer_workers", presence="alive") == 0
    assert value(samples, "mailer_workers", presence="stopped") == 1
    left = [value(samples, "mailer_issue_deliveries", status=s, **labels) for s in STILL_TO_SEND]
    assert sum(n or 0 for n in left) == 5  # pending, or retrying after the relay refused
    # The web service alone reads the queues through a connection of its own.
    assert value(samples, "mailer_broker_up") == 1
    assert value(samples, "mailer_queue_consumers", queue="mailer.receipts") == 0


async def test_a_web_service_without_its_broker_says_so_and_still_answers(
    config: dict[str, Any], start_service: StartService
) -> None:
    config["broker"]["url"] = f"amqp://guest:guest@127.0.0.1:{free_port()}/"  # nobody listens
    web = await start_service(config, run_worker=False, sample_interval=0.2)

    async def sampled() -> Samples | None:
        _, samples = await scrape(web)
        sampled = value(samples, "mailer_metrics_sampled_timestamp_seconds", part="workers")
        return samples if sampled else None

    samples = await eventually(sampled, timeout=10)
    assert value(samples, "mailer_broker_up") == 0
    assert value(samples, "mailer_database_up") == 1
    assert not any(name == "mailer_queue_messages" for name in names(samples))  # no false zero
    assert value(samples, "mailer_metrics_sampled_timestamp_seconds", part="queues") is None
    assert value(samples, "mailer_workers", presence="alive") == 0
