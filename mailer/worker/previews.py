"""An issue job seen before it is sent: rendered in one locale exactly as a subscriber gets
it, or sent to a few test addresses through the real relay path (compose, DKIM sign, relay).

A test message is marked as one (`[TEST]` before the subject, an `X-Mailer-Test` header and
its own Message-ID), is never written to the ledger or the issue's counts, and its
unsubscribe links (body and `List-Unsubscribe`) point to a URL that is no token, so nobody
can be unsubscribed from it. The CLI (`mailer issue preview|test`) and the console share it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

from mailer.core.audience import MailingList, newsletter_locale
from mailer.core.jobs import NewsletterJob, decode
from mailer.core.locales import LOCALES, Locale
from mailer.core.messages import TEST_HEADER, Draft, ListHeaders, Mailbox, parse_mailbox
from mailer.core.rendering import Rendered, Renderer
from mailer.core.trials import TrialResult, trial_unsubscribe_path
from mailer.errors import InvalidJob
from mailer.worker.newsletters import prepare
from mailer.worker.sending import Sender

__all__ = [
    "TEST_HEADER",
    "TEST_PREFIX",
    "Issue",
    "Trial",
    "marked_draft",
    "prepare_trial",
    "read_issue",
    "render_all",
    "render_preview",
    "send_tests",
    "test_addresses",
    "trial_unsubscribe_url",
]

TEST_PREFIX = "[TEST] "
MAX_TEST_RECIPIENTS = 10


def trial_unsubscribe_url(public_url: str, locale: Locale) -> str:
    """Where a test message's unsubscribe links go: a page saying, in the message's
    language, that they unsubscribe nobody."""
    return public_url.rstrip("/") + trial_unsubscribe_path(locale)


@dataclass(frozen=True, slots=True)
class Issue:
    """An issue job checked as the worker checks it, with the list it goes to."""

    job: NewsletterJob
    mailing_list: MailingList


def test_addresses(texts: Sequence[str]) -> list[Mailbox]:
    """Typed test addresses ('Name <user@example.org>' or bare) → mailboxes; ValueError
    naming the first that is not one, by its position (never the text: it is an address)."""
    found = []
    for number, text in enumerate(texts, 1):
        try:
            found.append(parse_mailbox(text.strip()))
        except ValueError as exc:
            reason = str(exc) if "line break" in str(exc) else "is not one mailbox"
            raise ValueError(f"test address {number} {reason}") from None
    return found


def read_issue(
    body: bytes, lists: Mapping[str, MailingList], *, max_attachment_bytes: int
) -> Issue:
    """The bytes of an issue job (a file, a paste, an upload) → an Issue; InvalidJob with
    the same reason the worker would park it for."""
    job = decode(body, max_attachment_bytes=max_attachment_bytes)
    if not isinstance(job, NewsletterJob):
        raise InvalidJob(f"kind: a {job.kind} job is not a newsletter issue")
    mailing_list = lists.get(job.list)
    if mailing_list is None:
        raise InvalidJob(f"list: no list {job.list!r} is configured")
    return Issue(job, mailing_list)


def render_preview(
    issue: Issue,
    renderer: Renderer,
    *,
    locale: Locale,
    name: str | None = None,
    unsubscribe_url: str,
) -> Rendered:
    """Subject, HTML and text as a subscriber in `locale` (greeted by `name`, if given)
    receives them; every locale is rendered first, as the worker does, so an error in any
    of them is reported (InvalidJob)."""
    prepared = prepare(issue.job, issue.mailing_list, renderer)
    return prepared.personalize(locale, name, unsubscribe_url)


def render_all(
    issue: Issue, renderer: Renderer, *, name: str | None, public_url: str
) -> dict[Locale, Rendered]:
    """`render_preview` in every locale, the issue rendered once for them all, each with
    the test link of its own language."""
    prepared = prepare(issue.job, issue.mailing_list, renderer)
    return {
        locale: prepared.personalize(locale, name, trial_unsubscribe_url(public_url, locale))
        for locale in LOCALES
    }


@dataclass(frozen=True, slots=True)
class Trial:
    """An issue ready to be sent to test addresses: what each of them gets, in order."""

    issue: Issue
    locale: Locale
    contents: list[Rendered]  # subject marked, each recipient's name greeted


def prepare_trial(
    issue: Issue,
    renderer: Renderer,
    recipients: Sequence[Mailbox],
    *,
    locale: Locale | None,
    public_url: str,
) -> Trial:
    """The issue rendered for each test address (in `locale`, else the list's default),
    once for them all; ValueError for no address, or too many."""
    if not recipients:
        raise ValueError("no test address given")
    if len(recipients) > MAX_TEST_RECIPIENTS:
        raise ValueError(f"at most {MAX_TEST_RECIPIENTS} test addresses at a time")
    chosen = newsletter_locale(locale, issue.mailing_list)
    url = trial_unsubscribe_url(public_url, chosen)
    prepared = prepare(issue.job, issue.mailing_list, renderer)
    contents = []
    for to in recipients:
        content = prepared.personalize(chosen, to.name, url)
        contents.append(
            Rendered(subject=TEST_PREFIX + content.subject, html=content.html, text=content.text)
        )
    return Trial(issue, chosen, contents)


def marked_draft(
    issue: Issue,
    content: Rendered,
    to: Mailbox,
    *,
    locale: Locale,
    public_url: str,
    now: datetime,
    message_id: str,
) -> Draft:
    url = trial_unsubscribe_url(public_url, locale)
    return Draft(
        sender=issue.mailing_list.sender,
        to=to,
        message_id=message_id,
        date=now,
        content=content,
        list_headers=ListHeaders(issue.mailing_list.list_id(), url),
        test_of=str(issue.job.id),
    )


def trial_message_id(issue_id: UUID, mailing_list: MailingList) -> str:
    """Unlike a real message's (issue, subscriber) id, new for every test send."""
    return f"<test.{issue_id}.{uuid4().hex[:16]}@{mailing_list.sender.domain}>"


async def send_tests(
    trial: Trial,
    sender: Sender,
    recipients: Sequence[Mailbox],
    *,
    public_url: str,
    clock: Callable[[], datetime],
) -> list[TrialResult]:
    """Send the trial to each test address, all at once through `sender`; nothing is
    recorded. The outcome of each is returned."""
    issue = trial.issue
    drafts = [
        marked_draft(
            issue,
            content,
            to,
            locale=trial.locale,
            public_url=public_url,
            now=clock(),
            message_id=trial_message_id(issue.job.id, issue.mailing_list),
        )
        for to, content in zip(recipients, trial.contents, strict=True)
    ]
    outcomes = await asyncio.gather(*(sender.send(draft, clock()) for draft in drafts))
    return [
        TrialResult(draft.to.address, trial.locale, draft.message_id, outcome)
        for draft, outcome in zip(drafts, outcomes, strict=True)
    ]
