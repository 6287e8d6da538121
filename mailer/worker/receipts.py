"""A receipt (or the confirmation of a subscription, sent the same way), in the order of the
stages:

    bytes ─► ① decode ─► ② delivery ─► ④ render ─► claim in ledger (③ consent)
          ─► pipeline (⑤ compose, ⑥ sign, relay, ⑦ classify) ─► record ─► verdict for the queue

Rendering comes before the claim so that a job that cannot be rendered is parked without
touching the ledger. An outcome is recorded before the verdict: the queue message is held
(unacknowledged, its claim renewed) for as long as the database cannot take it, so a message
the relay accepted is never sent again because the database was away when it was accepted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

from mailer.adapters.deliveries import Deliveries, ReceiptClaim
from mailer.core.addresses import address_ref
from mailer.core.audience import receipt_delivery
from mailer.core.consent import Suppress, decide_receipt
from mailer.core.deliveries import DeliveryStatus, RetryPolicy, Write, suppressed, unsendable
from mailer.core.jobs import ReceiptJob, decode, payload_digest
from mailer.core.locales import Locale
from mailer.core.messages import Draft, FileAttachment, Mailbox, message_id
from mailer.core.outcomes import retry_delay
from mailer.core.rendering import Renderer
from mailer.errors import InvalidJob, ShuttingDown, TemporaryFailure
from mailer.metrics import Metrics
from mailer.worker.pipeline import Attempts
from mailer.worker.sending import LARGE_MESSAGE_BYTES
from mailer.worker.verdicts import Done, Later, Verdict

log = logging.getLogger(__name__)
FIRST_WAIT = 0.2
MAX_WAIT = 5.0


class ReceiptPipeline:
    def __init__(
        self,
        *,
        renderer: Renderer,
        attempts: Attempts,
        deliveries: Deliveries,
        from_: Mailbox,
        hash_key: bytes,
        default_locale: Locale,
        max_attachment_bytes: int,
        retry: RetryPolicy,
        metrics: Metrics,
        clock: Callable[[], datetime],
    ) -> None:
        self._renderer = renderer
        self._attempts = attempts
        self._deliveries = deliveries
        self._from = from_
        self._hash_key = hash_key
        self._default_locale = default_locale
        self._max_attachment_bytes = max_attachment_bytes
        self._retry = retry
        self._metrics = metrics
        self._clock = clock
        self._stopping = asyncio.Event()
        self._owed: set[int] = set()
        self._writes: set[asyncio.Task[Any]] = set()
        # One at a time, as on the loop: a decode's transient copies are about five times
        # the job's size, and several at once would only add them up.
        self._large_decodes = asyncio.Semaphore(1)

    def stop(self) -> None:
        self._stopping.set()

    def _decode(self, body: bytes) -> tuple[ReceiptJob, bytes]:
        job = decode(body, max_attachment_bytes=self._max_attachment_bytes)
        if not isinstance(job, ReceiptJob):
            raise InvalidJob(f"kind: a {job.kind} job does not belong on the receipts queue")
        return job, payload_digest(job)

    def owed(self) -> list[int]:
        """Deliveries whose outcome is known but not yet written."""
        return list(self._owed)

    async def deliver(self, body: bytes) -> Verdict:
        if len(body) > LARGE_MESSAGE_BYTES:  # base64 and JSON of megabytes: off the loop
            async with self._large_decodes:
                job, digest = await asyncio.to_thread(self._decode, body)
        else:
            job, digest = self._decode(body)
        delivery = receipt_delivery(
            job, hash_key=self._hash_key, default_locale=self._default_locale
        )
        content = self._renderer.render(job.template, delivery.locale, _receipt_context(job))
        kind = job.message_kind
        claim = await self._deliveries.claim_receipt(job.id, digest, delivery.recipient_key, kind)
        ref = address_ref(delivery.recipient_key)
        if claim.verdict == "conflict":
            raise InvalidJob(f"id: {job.id} was already used for a different payload")
        if claim.verdict == "done":
            self._metrics.duplicates.labels(kind).inc()
            log.info(
                "%s already %s, not sent again job=%s rcpt=%s", kind, claim.status, job.id, ref
            )
            return Done()
        if claim.verdict == "busy":
            log.info("%s being sent by another worker job=%s rcpt=%s", kind, job.id, ref)
            return Later(self._retry.tiers[0], claim.attempts)
        assert claim.delivery_id is not None
        decision = decide_receipt(claim.suppression)
        if isinstance(decision, Suppress):
            not_sent = suppressed(claim.delivery_id, decision.reason)
            await self._record_shielded(not_sent, _Named(kind, job.id, ref), delivery.to.address)
            return Done()
        draft = Draft(
            sender=self._from,
            to=delivery.to,
            message_id=message_id(str(job.id), self._from.domain),
            date=self._clock(),
            content=content,
            attachments=[
                FileAttachment(a.filename, a.content_type, a.content) for a in job.attachments
            ],
        )
        # Sent and recorded in a task of its own: if the broker connection goes and takes
        # this handler with it, the transaction still finishes and is recorded, and the
        # redelivered job finds it done instead of sending it again.
        task = asyncio.create_task(self._send_and_record(claim, draft, _Named(kind, job.id, ref)))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        write = await asyncio.shield(task)
        if write is None:
            return Done()
        if write.status == DeliveryStatus.RETRYING:
            return Later(retry_delay(claim.attempts + 1, self._retry.tiers), claim.attempts + 1)
        return Done()

    async def _send_and_record(
        self, claim: ReceiptClaim, draft: Draft, named: _Named
    ) -> Write | None:
        """The write recorded, or None when another worker took the delivery over."""
        delivery_id = claim.delivery_id
        assert delivery_id is not None
        try:
            write, _ = await self._attempts.attempt(
                delivery_id,
                draft,
                attempts_before=claim.attempts,
                first_seen=claim.first_seen,
            )
        except ShuttingDown:
            await self._deliveries.hand_back([delivery_id])
            raise
        except ValueError as exc:  # cannot be made into a message: never will be
            write = unsendable(delivery_id, str(exc))
        return write if await self._record(write, named, draft.to.address) else None

    async def _record_shielded(self, write: Write, named: _Named, recipient: str) -> bool:
        """Record even if this handler is cancelled meanwhile (its queue message is then
        redelivered, and finds the outcome recorded)."""
        task = asyncio.create_task(self._record(write, named, recipient))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return await asyncio.shield(task)

    async def _record(self, write: Write, named: _Named, recipient: str) -> bool:
        """Write the outcome, however long the database takes to come back; False when
        another worker took the delivery over (it then holds the queue message and
        settles it)."""
        wait = FIRST_WAIT
        # Until written, a shutdown leaves this claim in place instead of handing it back.
        self._owed.add(write.delivery_id)
        while True:
            try:
                recorded = await self._deliveries.record([write], {write.delivery_id: recipient})
                break
            except TemporaryFailure as exc:
                if self._stopping.is_set() and not write.attempted:
                    self._owed.discard(write.delivery_id)  # never reached the relay: safe to retry
                    raise
                log.warning(
                    "%s outcome %s not recorded yet, trying again in %.1fs: %s",
                    named.kind,
                    write.status,
                    wait,
                    exc,
                )
                await asyncio.sleep(wait)
                wait = min(wait * 2, MAX_WAIT)
        self._owed.discard(write.delivery_id)
        if write.delivery_id not in recorded.ids:
            log.warning("%s claim lost before its outcome was recorded job=%s rcpt=%s", *named)
            return False
        self._metrics.deliveries.labels(named.kind, str(write.status)).inc()
        log.info(
            "%s %s job=%s rcpt=%s reply=%r",
            named.kind,
            write.status,
            named.job_id,
            named.ref,
            write.reply,
        )
        return True


class _Named(NamedTuple):
    """How the logs name a transactional message: its kind, job and recipient's reference."""

    kind: str
    job_id: UUID
    ref: str


def _receipt_context(job: ReceiptJob) -> dict[str, Any]:
    return {
        **job.data,
        "to_name": job.to.name,
        "attachments": [attachment.filename for attachment in job.attachments],
    }
