"""② Recipients: a job becomes deliveries, one per (job, recipient), each with its locale."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from mailer.core.addresses import address_key
from mailer.core.jobs import Locale, ReceiptJob
from mailer.core.messages import Mailbox


@dataclass(frozen=True, slots=True)
class Delivery:
    job_id: UUID
    to: Mailbox
    locale: Locale
    recipient_key: bytes


def receipt_delivery(job: ReceiptJob, *, hash_key: bytes, default_locale: Locale) -> Delivery:
    return Delivery(
        job_id=job.id,
        to=Mailbox(address=job.to.email, name=job.to.name),
        locale=job.locale or default_locale,
        recipient_key=address_key(hash_key, job.to.email),
    )
