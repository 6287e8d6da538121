"""What `mailer enqueue` checks before it publishes: the job as the worker will decode it,
its list configured, its template rendered with its data (an issue in every locale), so that
a file the worker would park is refused at the operator's terminal instead."""

from __future__ import annotations

from mailer.config import Settings
from mailer.core.audience import MailingList
from mailer.core.jobs import Job, NewsletterJob, ReceiptJob, SubscriptionJob, decode
from mailer.core.messages import parse_mailbox
from mailer.core.rendering import Renderer
from mailer.errors import ConfigError, InvalidJob, MailerError
from mailer.worker.previews import Issue, render_preview
from mailer.worker.receipts import _receipt_context


def check_job(body: bytes, settings: Settings, *, source: str) -> Job:
    """The decoded job, or MailerError naming the file and the first thing wrong in it."""
    try:
        job = decode(body, max_attachment_bytes=settings.worker.max_attachment_bytes)
    except InvalidJob as exc:
        raise MailerError(f"{source}: not a valid job, nothing published: {exc.reason}") from None
    if isinstance(job, SubscriptionJob) and job.list is not None and job.list not in settings.lists:
        raise MailerError(
            f"{source}: not a valid job, nothing published: list: no list {job.list!r}"
            " is configured ([lists.<slug>])"
        )
    if isinstance(job, ReceiptJob):
        try:  # the template exists and renders with the data given, as the worker checks
            templates(settings).render(
                job.template, job.locale or settings.sender.default_locale, _receipt_context(job)
            )
        except InvalidJob as exc:
            raise MailerError(
                f"{source}: not a valid job, nothing published: {exc.reason}"
            ) from None
    if isinstance(job, NewsletterJob):
        if job.list not in settings.lists:
            raise MailerError(
                f"{source}: not a valid job, nothing published: list: no list {job.list!r}"
                " is configured ([lists.<slug>])"
            )
        try:  # rendered in every locale, as the worker does before it accepts an issue
            render_preview(
                Issue(job, mailing_lists(settings)[job.list]),
                templates(settings),
                locale=settings.lists[job.list].default_locale,
                unsubscribe_url=settings.http.public_url,
            )
        except InvalidJob as exc:
            raise MailerError(
                f"{source}: not a valid job, nothing published: {exc.reason}"
            ) from None
    return job


def templates(settings: Settings) -> Renderer:
    try:
        return Renderer(settings.worker.templates_dir)
    except ValueError as exc:
        raise ConfigError(f"config: [worker] templates_dir: {exc}") from None


def mailing_lists(settings: Settings) -> dict[str, MailingList]:
    lists = {}
    for slug, configured in settings.lists.items():
        try:
            sender = parse_mailbox(configured.from_)
        except ValueError as exc:
            raise ConfigError(f"config: [lists.{slug}] from: {exc}") from None
        # The database's list id only goes into unsubscribe tokens, which these never carry.
        lists[slug] = MailingList(0, slug, configured.name, sender, configured.default_locale)
    return lists
