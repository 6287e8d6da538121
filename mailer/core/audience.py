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


@dataclass(frozen=True, slots=True)
class MailingList:
    """A list as its messages present it."""

    id: int
    slug: str
    name: str
    sender: Mailbox
    default_locale: Locale

    def list_id(self) -> str:
        """RFC 2919: `Name <slug.domain>`, the name left out when it is not plain ASCII."""
        identifier = f"<{self.slug}.{self.sender.domain}>"
        plain = self.name.isascii() and self.name.isprintable() and '"' not in self.name
        return f"{self.name} {identifier}" if plain else identifier


def newsletter_locale(preferred: Locale | None, mailing_list: MailingList) -> Locale:
    return preferred or mailing_list.default_locale


def newsletter_message_id(issue_id: UUID, subscriber_id: int, mailing_list: MailingList) -> str:
    """Derived from (issue, recipient): a resend after a crash carries the same id."""
    return f"<{issue_id}.{subscriber_id}@{mailing_list.sender.domain}>"
