"""Events of a newsletter end to end: the worker sends, its relay publishes, a portal's
consumer counts by id; through a cut broker connection; and a replay of the kept events."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from mailer.adapters.broker import Broker
from mailer.parts.events import EventRelay
from tests.conftest import StartService
from tests.support.events import EventsConsumer, close_broker_connections
from tests.support.jobs import encode
from tests.support.newsletters import issue, outcomes, people, subscribe, until_state
from tests.support.processes import amailer, environment
from tests.support.waiting import eventually

PEOPLE = 5000


@pytest.fixture
async def consumer(broker_url: str, portal: Broker) -> AsyncIterator[EventsConsumer]:
    consumer = EventsConsumer(broker_url, binding="*.message.*")
    await consumer.start()
    yield consumer
    await consumer.stop()


def with_events(config: dict[str, Any]) -> dict[str, Any]:
    config["events"] = {"poll_interval": 0.05, "takeover_interval": 0.2}
    config["newsletter"] = {"chunk_size": 100, "pool_size": 4, "poll_interval": 0.2}
    return config


async def published_ids(db: asyncpg.Connection, kind: str = "message.%") -> set[str]:
    rows = await db.fetch("SELECT id::text FROM events WHERE type LIKE $1", kind)
    return {r["id"] for r in rows}


async def test_a_newsletter_while_the_broker_connection_is_cut_loses_no_event(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    consumer: EventsConsumer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    """5,000 subscribers; once 200 events have arrived, the broker closes the worker's
    connection (its relay publishes through it). Figures: every delivery has its event,
    0 missing at the consumer; repeats at most one relay batch (500), asserted and given."""
    audience = people(PEOPLE)
    await subscribe(database_url, audience)
    service = await start_service(with_events(config))
    job = issue()
    await portal.publish(encode(job), routing_key="newsletter")
    await eventually(consumer.at_least(200), timeout=60)
    assert await close_broker_connections(f"mailer worker {service.worker_id}") == 1
    await until_state(db, job["id"], "done", timeout=120)
    assert await outcomes(db, job["id"]) == {"sent": PEOPLE}

    await eventually(consumer.at_least(PEOPLE), timeout=60)
    written = await published_ids(db)
    missing = written - set(consumer.counts)
    assert not missing, f"{len(missing)} events missing"
    delivered = consumer.of_type("message.delivered")
    assert sorted(e["recipient"] for e in delivered) == sorted(e for e, _, _ in audience)
    assert {e["job_id"] for e in delivered} == {job["id"]}
    assert set(consumer.keys) == {"default.message.delivered"}
    assert consumer.duplicates <= 500, f"{consumer.duplicates} repeats"
    print(f"events: {len(written)} written, 0 missing, {consumer.duplicates} repeats")
    assert service.part(EventRelay).leading


async def test_a_replay_publishes_the_kept_events_again_with_their_ids(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    consumer: EventsConsumer,
    db: asyncpg.Connection,
    database_url: str,
    broker_url: str,
) -> None:
    audience = people(20)
    await subscribe(database_url, audience)
    env = environment(config)
    migrated = await amailer("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    vhost = urlsplit(broker_url).path.lstrip("/")
    listing = ["list_exchanges", "name", "type", "durable", "--formatter", "json"]
    exchanges = json.loads(
        subprocess.run(
            ["rabbitmqctl", "-q", "-p", vhost, *listing],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert {"name": "mailer.events", "type": "topic", "durable": True} in exchanges

    await start_service(with_events(config))
    job = issue()
    await portal.publish(encode(job), routing_key="newsletter")
    await until_state(db, job["id"], "done", timeout=60)
    await eventually(consumer.at_least(20), timeout=30)
    first = dict(consumer.counts)

    done = await amailer(
        "events", "replay", "--since", "1h", "--type", "message.delivered", env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("replayed 20 event(s) of default from ")
    await eventually(consumer.at_least(20))

    async def twice() -> bool:
        return all(n == 2 for n in consumer.counts.values())

    await eventually(twice)
    assert set(consumer.counts) == set(first)

    none = await amailer("events", "replay", "--since", "1h", "--account", "acme", env=env)
    assert none.stdout.startswith("replayed 0 event(s) of acme")
    bad = await amailer("events", "replay", "--since", "yesterday", env=env)
    assert bad.returncode == 1 and "--since: 'yesterday' is not a time" in bad.stderr
