"""The webhook dispatcher: each endpoint of an account gets the account's events, in
position order, in signed batches (Standard Webhooks 1.0), one batch in flight at a time.

Every `poll_interval` the dispatcher claims the endpoints that are due and have events after
their cursor (a lease on the row: one process serves an endpoint at a time), and serves each
in a task of its own, so that a slow or dead endpoint holds up nothing but itself: not mail
(which never waits for an event) and not another endpoint. At most `concurrency` endpoints
are served at once by a process; the others wait for the next claim.

An endpoint is served batch after batch while it takes them: a 2xx moves its cursor; 410
disables it; anything else (another 4xx or 5xx, a redirect, a timeout, a refused address, a
connection error) keeps the batch and tries it again after a backoff with full jitter
(mailer/core/webhooks/retries.py), until the endpoint has failed for `disable_after`
without a success, when it is disabled.

The body is `{"events": [event, …]}`, each event exactly as CONTRACT §7 gives it (and as it
goes out on AMQP).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from uuid import UUID

import asyncpg

from mailer.adapters import outbox
from mailer.adapters.webhook_client import Answer, WebhookClient
from mailer.adapters.webhooks import Claim, WebhookEndpoints
from mailer.core.events import StoredEvent
from mailer.core.webhooks.retries import Backoff
from mailer.core.webhooks.signatures import batch_id, signature_header
from mailer.errors import TemporaryFailure
from mailer.metrics import Metrics

log = logging.getLogger(__name__)
RELEASE_SECONDS = 2.0  # to give a lease back at a stop


def batch_body(events: list[StoredEvent]) -> bytes:
    return json.dumps(
        {"events": [event.body for event in events]}, separators=(",", ":"), ensure_ascii=False
    ).encode()


class WebhookDispatcher:
    def __init__(
        self,
        endpoints: WebhookEndpoints,
        client: WebhookClient,
        *,
        pool: asyncpg.Pool,
        worker_id: UUID,
        backoff: Backoff,
        disable_after: float,
        poll_interval: float,
        lease: float,
        concurrency: int,
        metrics: Metrics,
        draw: Callable[[], float],
    ) -> None:
        """`draw`: a uniform random number in [0, 1), for the jitter."""
        self._endpoints = endpoints
        self._client = client
        self._pool = pool
        self._worker = worker_id
        self._backoff = backoff
        self._disable_after = disable_after
        self._poll = poll_interval
        self._lease = timedelta(seconds=lease)
        self._concurrency = concurrency
        self._metrics = metrics
        self._draw = draw
        self._serving: dict[UUID, asyncio.Task[None]] = {}

    @property
    def serving(self) -> int:
        return len(self._serving)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.claim_once()
            except TemporaryFailure as exc:
                log.warning("webhooks: cannot claim endpoints: %s", exc)
            except Exception:  # a bug here must not end webhook delivery for the process
                log.exception("webhooks: claiming endpoints failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self._poll)

    async def claim_once(self) -> int:
        room = self._concurrency - len(self._serving)
        if room <= 0:
            return 0
        claims = await self._endpoints.claim(self._worker, self._lease, room)
        for claim in claims:
            task = asyncio.create_task(self._serve(claim), name=f"webhook {claim.id}")
            self._serving[claim.id] = task
            task.add_done_callback(self._served)
        return len(claims)

    def _served(self, task: asyncio.Task[None]) -> None:
        for key, serving in list(self._serving.items()):
            if serving is task:
                del self._serving[key]

    async def stop(self, grace: float) -> None:
        """Let the batches in flight finish for `grace` seconds, then cut them off and give
        their leases back (a batch cut off is sent again: at least once)."""
        tasks = list(self._serving.values())
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, claim: Claim) -> None:
        going: Claim | None = claim
        try:
            while going is not None:
                going = await self._one_batch(going)
        except TemporaryFailure as exc:
            log.warning("webhooks: endpoint %s: %s; the lease runs out", claim.id, exc)
        except asyncio.CancelledError:
            with contextlib.suppress(TemporaryFailure, TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(
                    self._endpoints.release(claim.id, self._worker), RELEASE_SECONDS
                )
            raise
        except Exception:
            log.exception("webhooks: endpoint %s failed unexpectedly", claim.id)
            raise

    async def _one_batch(self, claim: Claim) -> Claim | None:
        """Send the next batch; the claim to go on with, or None when done for now."""
        events = await outbox.events_after(
            self._pool, claim.account, claim.cursor_position, claim.batch_size
        )
        if not events:
            await self._endpoints.release(claim.id, self._worker)
            return None
        kept = events
        if claim.batch_through is not None:
            kept = [event for event in events if event.position <= claim.batch_through]
        if kept:
            events = kept
        else:  # the batch tried before is gone (past retention): the next one is new
            claim = replace(claim, batch_through=None)
        through = events[-1].position
        if claim.batch_through is None and not await self._endpoints.trying(
            claim, self._worker, through
        ):
            # an operator changed the endpoint (disabled, replayed, removed) meanwhile
            await self._endpoints.release(claim.id, self._worker)
            return None
        answer = await self._send(claim, events, through)
        if answer.status is not None and 200 <= answer.status < 300:
            self._metrics.webhook_batches.labels("delivered").inc()
            self._metrics.webhook_events.inc(len(events))
            if not await self._endpoints.delivered(
                claim, self._worker, through, len(events), self._lease
            ):
                # replayed (or removed) while the batch was out: served again from the
                # cursor the operator set, by whoever claims it next
                await self._endpoints.release(claim.id, self._worker)
                return None
            return replace(claim, cursor_position=through, batch_through=None, attempts=0)
        if answer.status == 410:
            self._metrics.webhook_batches.labels("gone").inc()
            await self._endpoints.gone(claim.id, self._worker, f"{answer.reason}: disabled")
            log.warning("webhooks: endpoint %s answered 410 Gone: disabled", claim.id)
            return None
        self._metrics.webhook_batches.labels("failed").inc()
        delay = self._backoff.delay(claim.attempts + 1, self._draw())
        disabled = await self._endpoints.failed(
            claim.id, self._worker, answer.reason, delay, self._disable_after
        )
        if disabled:
            log.error(
                "webhooks: endpoint %s failed for %s s without a success: disabled (%s)",
                claim.id,
                f"{self._disable_after:g}",
                answer.reason,
            )
        else:
            log.info(
                "webhooks: endpoint %s: %s; attempt %d, next in %.1f s",
                claim.id,
                answer.reason,
                claim.attempts + 1,
                delay,
            )
        return None

    async def _send(self, claim: Claim, events: list[StoredEvent], through: int) -> Answer:
        body = batch_body(events)
        message_id = batch_id(claim.id, claim.replays, claim.cursor_position, through)
        timestamp = int(time.time())
        headers = {
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(claim.keys, message_id, timestamp, body),
        }
        answer = await self._client.post(claim.url, body, headers)
        self._metrics.webhook_seconds.observe(answer.seconds)
        return answer
