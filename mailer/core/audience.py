"""② Recipients: a job becomes deliveries, one per (job, recipient), each with its locale."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from mailer.core.addresses import address_key, header_safe, normalize_address
from mailer.core.jobs import ReceiptJob
from mailer.core.locales import Locale, locale_named, spoken
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


@dataclass(frozen=True, slots=True)
class ImportedPerson:
    """One valid row of a subscriber import."""

    email: str
    name: str | None
    locale: Locale | None
    address_key: bytes


def imported_person(fields: Sequence[str], *, hash_key: bytes) -> ImportedPerson:
    """`email[, name[, locale]]` from a CSV row; ValueError says what is wrong with it."""
    if not fields or not fields[0].strip():
        raise ValueError("no e-mail address")
    if len(fields) > 3:
        raise ValueError(f"{len(fields)} columns; expected email, name, locale")
    email = normalize_address(fields[0].strip())
    name = fields[1].strip() if len(fields) > 1 and fields[1].strip() else None
    if name is not None:
        if len(name) > 256:
            raise ValueError("name: longer than 256 characters")
        try:
            name = header_safe(name)
        except ValueError as exc:
            raise ValueError(f"name: {exc}") from None
    locale_text = fields[2].strip().lower() if len(fields) > 2 else ""
    locale = locale_named(locale_text)
    if locale is None and locale_text:
        raise ValueError(f"locale: {locale_text!r} is not {spoken()}")
    return ImportedPerson(email, name, locale, address_key(hash_key, email))
