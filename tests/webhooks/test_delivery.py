"""Webhook delivery end to end: events committed to the outbox reach a real HTTPS receiver
(on loopback, allow-listed), signed and verified by the Standard Webhooks reference
library, through outages, 410s, slow endpoints and two dispatchers."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
from aiohttp import web

from mailer.adapters.webhooks import EndpointView, WebhookEndpoints, endpoint_counts
from tests.support.waiting import eventually
from tests.support.webhooks import Receiver, publish_events
from tests.webhooks.conftest import StartDispatcher, endpoints_of, settings_of


async def test_an_outage_of_500s_then_200_loses_nothing_and_shows_the_retry_schedule(
    hooks_config: dict[str, Any],
    pool: asyncpg.Pool,
    receiver: Receiver,
    database_url: str,
    start_dispatcher: StartDispatcher,
) -> None:
    """The receiver answers 500 for 2 s, then 200: 0 events lost, 0 duplicated, in order;
    the retries follow the backoff (0.2 s floor, ceiling doubling to 0.8 s, full jitter)."""
    settings = settings_of(hooks_config)
    endpoints = endpoints_of(pool, settings)
    endpoint, secret = await endpoints.register("default", receiver.url, batch_size=100)
    receiver.secrets = [secret]
    failures: list[float] = []
    up_at = time.monotonic() + 2.0

    async def outage(request: web.Request) -> web.Response:
        if time.monotonic() < up_at:
            failures.append(time.monotonic())
            return web.Response(status=500)
        return web.Response(status=204)

    receiver.behaviour = outage
    ids = await publish_events(database_url, 250)
    await start_dispatcher(settings)
    await eventually(lambda: len(receiver.taken()) >= 250, timeout=10)
    taken = [event["id"] for event in receiver.taken()]
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(failures)]
    assert taken == ids, f"lost {len(set(ids) - set(taken))}, dup {len(taken) - len(set(taken))}"
    assert len(failures) >= 3, f"retry gaps (s): {gaps}"
    assert all(0.15 <= gap <= 2.5 for gap in gaps), f"retry gaps (s): {gaps}"  # 0.8 s + load
    assert [len(r.events) for r in receiver.requests] == [100, 100, 50]
    assert receiver.requests[0].webhook_id == f"msg_{endpoint.hex}_0_0_100"  # as on each retry
    shown = await endpoints.get(endpoint)
    assert shown.backlog == 0 and shown.delivered == 250 and shown.attempts == 0
    assert shown.last_failure == "answered 500" and shown.last_success_at is not None
    assert shown.failing_since is None and shown.state == "active"


async def test_a_410_disables_the_endpoint_and_nothing_more_is_sent(
    hooks_config: dict[str, Any],
    pool: asyncpg.Pool,
    receiver: Receiver,
    database_url: str,
    start_dispatcher: StartDispatcher,
) -> None:
    settings = settings_of(hooks_config)
    endpoints = endpoints_of(pool, settings)
    endpoint, secret = await endpoints.register("default", receiver.url, batch_size=10)
    receiver.secrets = [secret]
    calls: list[int] = []

    async def gone(request: web.Request) -> web.Response:
        calls.append(1)
        return web.Response(status=410)

    receiver.behaviour = gone
    await publish_events(database_url, 5)
    await start_dispatcher(settings)
    shown = await eventually(lambda: _state(endpoints, endpoint, "disabled"), timeout=5)
    assert shown.disabled_by == "gone" and "410" in (shown.disabled_reason or "")
    await publish_events(database_url, 5)
    await asyncio.sleep(0.5)
    assert len(calls) == 1 and shown.backlog == 5
    assert (await endpoint_counts(pool))["disabled_gone"] == 1


async def test_an_endpoint_failing_for_disable_after_is_disabled(
    hooks_config: dict[str, Any],
    pool: asyncpg.Pool,
    receiver: Receiver,
    database_url: str,
    start_dispatcher: StartDispatcher,
) -> None:
    hooks_config["webhooks"]["disable_after"] = 1.0
    settings = settings_of(hooks_config)
    endpoints = endpoints_of(pool, settings)
    endpoint, secret = await endpoints.register("default", receiver.url, batch_size=10)
    receiver.secrets = [secret]
    receiver.answer = 503
    await publish_events(database_url, 3)
    await start_dispatcher(settings)
    shown = await eventually(lambda: _state(endpoints, endpoint, "disabled"), timeout=6)
    assert shown.disabled_by == "failing" and "answered 503" in (shown.disabled_reason or "")
    assert shown.attempts >= 2 and shown.backlog == 3
    assert (await endpoint_counts(pool))["disabled_failing"] == 1
    await endpoints.enable(endpoint)
    receiver.answer = 200
    await eventually(lambda: len(receiver.taken()) == 3, timeout=5)


async def test_a_stalled_endpoint_does_not_delay_another(
    hooks_config: dict[str, Any],
    pool: asyncpg.Pool,
    receiver: Receiver,
    database_url: str,
    start_dispatcher: StartDispatcher,
) -> None:
    """One endpoint stalls 15 s (the request timeout); the other, of the same account, gets
    every event within a second of its commit."""
    hooks_config["webhooks"]["timeout"] = 15
    settings = settings_of(hooks_config)
    endpoints = endpoints_of(pool, settings)
    slow = Receiver(receiver.pki)
    stalled, released = asyncio.Event(), asyncio.Event()
    await slow.start()
    try:
        _, slow_secret = await endpoints.register("default", slow.url, batch_size=10)
        _, fast_secret = await endpoints.register("default", receiver.url, batch_size=10)
        slow.secrets, receiver.secrets = [slow_secret], [fast_secret]

        async def stall(request: web.Request) -> web.Response:
            stalled.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(released.wait(), 15)  # the test ends it sooner
            return web.Response(status=200)

        slow.behaviour = stall
        await start_dispatcher(settings)
        await publish_events(database_url, 5)
        await asyncio.wait_for(stalled.wait(), 10)
        began = time.monotonic()
        ids = await publish_events(database_url, 5)
        await eventually(lambda: len(receiver.taken()) == 10, timeout=8)
        took = time.monotonic() - began
        assert [e["id"] for e in receiver.taken()][5:] == ids
        assert took < 5, f"the fast endpoint waited {took:.2f} s behind the one stalled for 15 s"
        assert slow.requests == []
    finally:
        released.set()
        await slow.stop()


async def test_two_dispatchers_deliver_no_batch_twice(
    hooks_config: dict[str, Any],
    pool: asyncpg.Pool,
    receiver: Receiver,
    database_url: str,
    start_dispatcher: StartDispatcher,
) -> None:
    """Two worker processes' dispatchers serve one endpoint while 600 events arrive in 12
    commits: every event once (0 duplicates, 0 lost), one batch in flight at a time."""
    settings = settings_of(hooks_config)
    endpoints = endpoints_of(pool, settings)
    _, secret = await endpoints.register("default", receiver.url, batch_size=20)
    receiver.secrets = [secret]
    in_flight = 0
    most = 0

    async def count(request: web.Request) -> web.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.005)
        in_flight -= 1
        return web.Response(status=200)

    receiver.behaviour = count
    await start_dispatcher(settings)
    await start_dispatcher(settings)
    ids: list[str] = []
    for _ in range(12):
        ids += await publish_events(database_url, 50)
        await asyncio.sleep(0.05)
    await eventually(lambda: len(receiver.taken()) >= 600, timeout=15)
    await asyncio.sleep(0.3)
    taken = [event["id"] for event in receiver.taken()]
    webhook_ids = [r.webhook_id for r in receiver.requests]
    assert len(taken) - len(set(taken)) == 0, "duplicates"
    assert taken == ids
    assert len(webhook_ids) == len(set(webhook_ids))
    assert most == 1


async def test_a_rotated_secret_signs_beside_the_old_one_and_a_replay_sends_again(
    hooks_config: dict[str, Any],
    pool: asyncpg.Pool,
    receiver: Receiver,
    database_url: str,
    start_dispatcher: StartDispatcher,
) -> None:
    settings = settings_of(hooks_config)
    endpoints = endpoints_of(pool, settings)
    endpoint, old = await endpoints.register("default", receiver.url, batch_size=100)
    new = await endpoints.rotate_secret(endpoint, timedelta(hours=1))
    assert new != old and new.startswith("whsec_")
    receiver.secrets = [old, new]
    before = datetime.now(UTC)
    ids = await publish_events(database_url, 3)
    await start_dispatcher(settings)
    await eventually(lambda: len(receiver.taken()) == 3, timeout=5)
    assert receiver.requests[0].verified == [old, new]  # either secret verifies
    first_id = receiver.requests[0].webhook_id
    assert (await endpoints.get(endpoint)).rotating_until is not None
    await endpoints.replay(endpoint, before - timedelta(seconds=1))
    await eventually(lambda: len(receiver.taken()) == 6, timeout=5)
    assert [e["id"] for e in receiver.taken()] == ids + ids
    assert receiver.requests[1].webhook_id != first_id  # a replay is not dropped as a repeat


async def _state(endpoints: WebhookEndpoints, endpoint: UUID, state: str) -> EndpointView | None:
    shown = await endpoints.get(endpoint)
    return shown if shown.state == state else None


async def test_a_batch_whose_events_passed_retention_while_failing_gives_way_to_the_next(
    hooks_config: dict[str, Any],
    pool: asyncpg.Pool,
    receiver: Receiver,
    database_url: str,
    db: asyncpg.Connection,
    start_dispatcher: StartDispatcher,
) -> None:
    settings = settings_of(hooks_config)
    endpoints = endpoints_of(pool, settings)
    endpoint, secret = await endpoints.register("default", receiver.url, batch_size=10)
    receiver.secrets = [secret]
    receiver.answer = 503
    await publish_events(database_url, 3)
    await start_dispatcher(settings)
    await eventually(lambda: _failed_once(endpoints, endpoint), timeout=5)
    later = await publish_events(database_url, 2)  # positions 4 and 5
    # the retention's purge takes the batch being tried (1 to 3), as it would after days
    await db.execute("DELETE FROM events WHERE position <= 3")
    receiver.answer = 200
    await eventually(lambda: len(receiver.taken()) == 2, timeout=5)
    assert [event["id"] for event in receiver.taken()] == later
    assert (await endpoints.get(endpoint)).backlog == 0


async def _failed_once(endpoints: WebhookEndpoints, endpoint: UUID) -> bool:
    return (await endpoints.get(endpoint)).attempts >= 1


async def test_an_endpoint_held_by_a_process_that_died_is_taken_over_when_its_lease_ends(
    hooks_config: dict[str, Any],
    pool: asyncpg.Pool,
    receiver: Receiver,
    database_url: str,
    start_dispatcher: StartDispatcher,
) -> None:
    """A process claimed the endpoint for 1.5 s and died: nothing is sent while its lease
    lasts, then another process delivers everything (0 lost)."""
    settings = settings_of(hooks_config)
    endpoints = endpoints_of(pool, settings)
    _, secret = await endpoints.register("default", receiver.url, batch_size=100)
    receiver.secrets = [secret]
    ids = await publish_events(database_url, 20)
    held = await endpoints.claim(uuid4(), timedelta(seconds=1.5), 10)  # then it died
    assert len(held) == 1
    began = time.monotonic()
    await start_dispatcher(settings)
    await eventually(lambda: len(receiver.taken()) == 20, timeout=12)
    took = time.monotonic() - began
    assert [event["id"] for event in receiver.taken()] == ids
    assert 1.2 < took < 10, f"taken over after {took:.2f} s"


async def test_an_endpoint_at_a_private_address_is_refused_at_each_attempt(
    hooks_config: dict[str, Any],
    pool: asyncpg.Pool,
    database_url: str,
    start_dispatcher: StartDispatcher,
) -> None:
    """Registered (an IP address written the usual way), then refused by the guard at
    every send: a failure with the reason, retried, never a connection."""
    settings = settings_of(hooks_config)
    endpoints = endpoints_of(pool, settings)
    endpoint, _ = await endpoints.register("default", "https://169.254.169.254/x", batch_size=5)
    await publish_events(database_url, 2)
    await start_dispatcher(settings)
    shown = await eventually(lambda: _failed_once(endpoints, endpoint), timeout=5)
    assert shown
    failed = await endpoints.get(endpoint)
    assert failed.last_failure == "refused: 169.254.169.254 is a link-local address"
    assert failed.state == "active" and failed.backlog == 2
