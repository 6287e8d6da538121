"""Webhook delivery: events per second from the outbox to HTTPS receivers, and the time
from an event's commit to its arrival, side by side for batch sizes and endpoint counts.

    .venv/bin/python -m bench.webhooks [--events 20000]

Each row: a fresh database, N endpoints of one account on one TLS receiver on loopback
(allow-listed) that verifies nothing (the client's cost is measured, not the receiver's),
the events committed and sequenced first (a backlog: throughput), then one event at a
time, 100 times, its commit to its arrival (latency, with the default poll of 0.5 s and a
poll of 0.05 s). One dispatcher, as one worker process runs it; the signing cost alone
(HMAC-SHA256 over a batch's body) is given per event.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from bench.table import per_call, print_table
from mailer.adapters import database, outbox
from mailer.adapters.webhooks import WebhookEndpoints, sealing_keys
from mailer.assembly.webhooks import webhook_delivery
from mailer.config import build_settings
from mailer.core.events import StoredEvent
from mailer.core.webhooks.signatures import secret_bytes, signature_header
from mailer.metrics import Metrics
from mailer.worker.webhooks import batch_body
from tests.support.tls import Pki, make_pki

ADMIN = os.environ.get("MAILER_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET = "bench-secret-key-that-is-long-enough-0123456789"


class Sink:
    """Counts the events it is sent, and when each arrived."""

    def __init__(self, pki: Pki) -> None:
        self.pki = pki
        self.count = 0
        self.arrived: dict[str, float] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/hooks/{n}", self._take)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.pki.server_context())
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _take(self, request: web.Request) -> web.Response:
        body = await request.json()
        now = time.perf_counter()
        for event in body["events"]:
            self.count += 1
            self.arrived.setdefault(event["id"], now)
        return web.Response(status=204)


async def fresh_database() -> str:
    name = f"mailer_bench_webhooks_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    dsn = ADMIN.rsplit("/", 1)[0] + "/" + name
    await database.migrate(dsn)
    return dsn


async def drop(dsn: str) -> None:
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f"DROP DATABASE IF EXISTS {dsn.rsplit('/', 1)[1]} WITH (FORCE)")
    await admin.close()


async def commit_events(pool: asyncpg.Pool, count: int) -> tuple[list[str], float]:
    """Events committed and sequenced; their ids and the moment of the last commit."""
    events = [
        outbox.event("message.delivered", recipient=f"r{n}@example.pl", kind="receipt")
        for n in range(count)
    ]
    async with pool.acquire() as conn:
        for start in range(0, count, 5000):
            async with conn.transaction():
                await outbox.append(conn, events[start : start + 5000])
        committed = time.perf_counter()
        while await outbox.sequence(conn, 5000):
            pass
    return [str(e.id) for e in events], committed


async def one_row(
    pki: Pki, *, events: int, batch: int, endpoints: int, poll: float
) -> dict[str, Any]:
    dsn = await fresh_database()
    sink = Sink(pki)
    await sink.start()
    config = {
        "database": {"url": dsn},
        "security": {"secret_key": SECRET},
        "webhooks": {
            "allow": ["127.0.0.1/32"],
            "ca_file": str(pki.ca_file),
            "poll_interval": poll,
        },
    }
    settings = build_settings(config)
    pool = await database.open_pool(dsn, size=8)
    part = webhook_delivery(settings, pool, worker_id=uuid.uuid4(), metrics=Metrics())
    try:
        hooks = WebhookEndpoints(pool, sealing_keys(settings))
        for n in range(endpoints):
            url = f"https://127.0.0.1:{sink.port}/hooks/{n}"
            await hooks.register("default", url, batch_size=batch)
        await commit_events(pool, events)
        began = time.perf_counter()
        await part.start()
        while sink.count < events * endpoints:
            await asyncio.sleep(0.01)
        rate = events * endpoints / (time.perf_counter() - began)
        delays = []
        for _ in range(100 if endpoints == 1 else 0):
            [event_id], committed = await commit_events(pool, 1)
            while event_id not in sink.arrived:
                await asyncio.sleep(0.001)
            delays.append(sink.arrived[event_id] - committed)
            await asyncio.sleep(poll * 0.37)  # not in step with the poll
    finally:
        await part.stop()
        await pool.close()
        await sink.stop()
        await drop(dsn)
    quantiles = statistics.quantiles(delays, n=100) if delays else []
    return {
        "rate": rate,
        "p50": quantiles[49] if quantiles else None,
        "p99": quantiles[98] if quantiles else None,
    }


def signing_cost(batch: int) -> float:
    """Seconds to build and sign one batch of `batch` events, per event."""
    events = [
        StoredEvent(
            position=n,
            id=uuid.uuid4(),
            type="message.delivered",
            occurred_at=outbox.now(),
            account="default",
            body={"id": str(uuid.uuid4()), "type": "message.delivered", "recipient": "a@b.pl"},
        )
        for n in range(batch)
    ]
    key = secret_bytes("whsec_" + "QUJD" * 11)

    def sign() -> None:
        body = batch_body(events)
        signature_header([key, key], "msg_x", 1_700_000_000, body)

    return per_call(sign, seconds=0.5) / batch


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        pki = make_pki(Path(folder))
        rows = []
        for batch, endpoints, poll in ((1, 1, 0.5), (100, 1, 0.5), (100, 1, 0.05), (100, 10, 0.5)):
            events = args.events if batch > 1 else min(args.events, 2000)
            found = await one_row(pki, events=events, batch=batch, endpoints=endpoints, poll=poll)
            rows.append(
                (
                    f"batch {batch}, {endpoints} endpoint(s), poll {poll:g} s",
                    f"{events * endpoints:,}",
                    f"{found['rate']:,.0f}",
                    "-" if found["p50"] is None else f"{found['p50'] * 1000:.0f}",
                    "-" if found["p99"] is None else f"{found['p99'] * 1000:.0f}",
                )
            )
    print_table(
        "Webhooks: events delivered per second, and commit → arrival (ms)",
        ["setup", "events", "events/s", "p50 ms", "p99 ms"],
        rows,
    )
    print_table(
        "Signing (build the body, two HMAC-SHA256 signatures): µs per event",
        ["batch", "µs/event"],
        [(str(b), f"{signing_cost(b) * 1e6:.2f}") for b in (1, 100)],
    )


if __name__ == "__main__":
    asyncio.run(main())
