"""A receipt, in the order of the stages:

    bytes ─► ① decode ─► ② delivery ─► ④ render ─► claim in ledger (③ consent)
          ─► ⑤ compose ─► ⑥ sign ─► relay ─► ⑦ classify ─► record ─► verdict for the queue

Rendering comes before the claim so that a job that cannot be rendered is parked without
touching the ledger. The verdict tells the consumer what to do with the queue message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from mailer.adapters.ledger import Ledger, Record
from mailer.core.addresses import address_ref
from mailer.core.audience import Delivery, receipt_delivery
from mailer.core.consent import Suppress, decide_receipt
from mailer.core.jobs import Locale, ReceiptJob, decode, payload_digest
from mailer.core.messages import Draft, FileAttachment, Mailbox, message_id
from mailer.core.outcomes import Outcome, retry_delay, settle
from mailer.core.rendering import Renderer
from mailer.errors import InvalidJob, ShuttingDown
from mailer.metrics import Metrics
from mailer.worker.sending import Sender
from mailer.worker.verdicts import Done, Later, RetryPolicy, Verdict

log = logging.getLogger(__name__)


class ReceiptPipeline:
    def __init__(
        self,
        *,
        renderer: Renderer,
        sender: Sender,
        ledger: Ledger,
        from_: Mailbox,
        hash_key: bytes,
        default_locale: Locale,
        max_attachment_bytes: int,
        retry: RetryPolicy,
        metrics: Metrics,
        clock: Callable[[], datetime],
    ) -> None:
        self._renderer = renderer
        self._sender = sender
        self._ledger = ledger
        self._from = from_
        self._hash_key = hash_key
        self._default_locale = default_locale
        self._max_attachment_bytes = max_attachment_bytes
        self._retry = retry
        self._metrics = metrics
        self._clock = clock

    async def deliver(self, body: bytes) -> Verdict:
        job = decode(body, max_attachment_bytes=self._max_attachment_bytes)
        if not isinstance(job, ReceiptJob):
            raise InvalidJob(f"kind: a {job.kind} job does not belong on the receipts queue")
        delivery = receipt_delivery(
            job, hash_key=self._hash_key, default_locale=self._default_locale
        )
        content = self._renderer.render(job.template, delivery.locale, _receipt_context(job))
        claim = await self._ledger.claim_receipt(
            job.id, payload_digest(job), delivery.recipient_key
        )
        ref = address_ref(delivery.recipient_key)
        if claim.verdict == "conflict":
            raise InvalidJob(f"id: {job.id} was already used for a different payload")
        if claim.verdict == "done":
            self._metrics.duplicates.labels("receipt").inc()
            log.info("receipt already %s, not sent again job=%s rcpt=%s", claim.status, job.id, ref)
            return Done()
        if claim.verdict == "busy":
            log.info("receipt being sent by another worker job=%s rcpt=%s", job.id, ref)
            return Later(self._retry.tiers[0], claim.attempts)
        assert claim.delivery_id is not None
        decision = decide_receipt(claim.suppression)
        if isinstance(decision, Suppress):
            await self._ledger.record(
                claim.delivery_id, Record("suppressed", attempted=False, detail=decision.reason)
            )
            self._metrics.deliveries.labels("receipt", "suppressed").inc()
            log.info("receipt suppressed (%s) job=%s rcpt=%s", decision.reason, job.id, ref)
            return Done()
        now = self._clock()
        draft = Draft(
            sender=self._from,
            to=delivery.to,
            message_id=message_id(str(job.id), self._from.domain),
            date=now,
            content=content,
            attachments=[
                FileAttachment(a.filename, a.content_type, a.content) for a in job.attachments
            ],
        )
        try:
            outcome = await self._sender.send(draft, now)
        except ShuttingDown:
            await self._ledger.release(claim.delivery_id)
            raise
        return await self._settle(claim.delivery_id, claim.first_seen, delivery, draft, outcome)

    async def _settle(
        self,
        delivery_id: int,
        first_seen: datetime,
        delivery: Delivery,
        draft: Draft,
        outcome: Outcome,
    ) -> Verdict:
        ref = address_ref(delivery.recipient_key)
        settled = settle(
            outcome,
            address=delivery.to.address,
            tried_for=(self._clock() - first_seen).total_seconds(),
            give_up_after=self._retry.give_up_after,
        )
        record = Record(
            settled.status,
            attempted=True,
            reply=settled.reply,
            message_id=draft.message_id if settled.status == "sent" else None,
            detail=settled.detail,
            suppress="hard_bounce" if settled.hard_bounce else None,
        )
        attempts = await self._ledger.record(delivery_id, record)
        if attempts is None:
            # Another worker took the delivery over after our lease lapsed; it holds its own
            # copy of the queue message and settles it.
            log.warning(
                "receipt claim lost before its outcome was recorded job=%s rcpt=%s",
                delivery.job_id,
                ref,
            )
            return Done()
        self._metrics.deliveries.labels("receipt", record.status).inc()
        log.info(
            "receipt %s job=%s rcpt=%s attempts=%d reply=%r",
            record.status,
            delivery.job_id,
            ref,
            attempts,
            record.reply,
        )
        if record.status == "retrying":
            return Later(retry_delay(attempts, self._retry.tiers), attempts)
        return Done()


def _receipt_context(job: ReceiptJob) -> dict[str, Any]:
    return {
        **job.data,
        "to_name": job.to.name,
        "attachments": [attachment.filename for attachment in job.attachments],
    }
