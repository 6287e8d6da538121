"""What `mailer enqueue` checks before it publishes: the job as the worker will decode it,
so that a file the worker would park is refused at the operator's terminal instead."""

from __future__ import annotations

from mailer.config import Settings
from mailer.core.jobs import Job, NewsletterJob, decode
from mailer.errors import InvalidJob, MailerError


def check_job(body: bytes, settings: Settings, *, source: str) -> Job:
    """The decoded job, or MailerError naming the file and the first thing wrong in it."""
    try:
        job = decode(body, max_attachment_bytes=settings.worker.max_attachment_bytes)
    except InvalidJob as exc:
        raise MailerError(f"{source}: not a valid job, nothing published: {exc.reason}") from None
    if isinstance(job, NewsletterJob) and job.list not in settings.lists:
        raise MailerError(
            f"{source}: not a valid job, nothing published: list: no list {job.list!r}"
            " is configured ([lists.<slug>])"
        )
    return job
