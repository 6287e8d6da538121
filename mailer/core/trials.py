"""An issue tried before it is sent: what the console asks of the worker's side for it (a
preview, a test send), so that the pages need not know how either is done."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from mailer.core.locales import Locale, locale_named
from mailer.core.outcomes import Outcome
from mailer.core.rendering import Rendered
from mailer.errors import MailerError, TemporaryFailure

# A test message's unsubscribe links (body and List-Unsubscribe) lead here, to no token: they
# unsubscribe nobody. The page says so in the message's language, named after the dot.
TRIAL_LINK = "test-message-no-unsubscribe"


def trial_unsubscribe_path(locale: Locale) -> str:
    return f"/u/{TRIAL_LINK}.{locale}"


def trial_link(token: str) -> tuple[bool, Locale | None]:
    """(whether the token of a /u/ link is a test message's, the message's locale if it
    says)."""
    name, _, suffix = token.partition(".")
    if name != TRIAL_LINK:
        return False, None
    return True, locale_named(suffix)


@dataclass(frozen=True, slots=True)
class TrialResult:
    """One address of a test send (recorded nowhere): what the relay said."""

    address: str
    locale: Locale
    message_id: str
    outcome: Outcome


class PreviewsBusy(TemporaryFailure):
    """As many previews are rendering and waiting as allowed: try again shortly."""


class PreviewTooCostly(MailerError):
    """The preview needed more time or memory than one may take."""


# The bytes of an issue job and a name to greet → what a subscriber gets in each locale;
# InvalidJob when it is not a valid issue, PreviewsBusy or PreviewTooCostly.
Previewer = Callable[[bytes, str | None], Awaitable[dict[Locale, Rendered]]]
# The job, typed addresses and a locale (None: the list's default) → the relay's answer for
# each; InvalidJob for the job, ValueError for the addresses.
TestSend = Callable[[bytes, Sequence[str], Locale | None], Awaitable[list[TrialResult]]]
