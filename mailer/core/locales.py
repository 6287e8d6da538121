"""The languages mailer writes in: one spelling of a locale, imported wherever one is named
(jobs, templates, lists in the settings, the recipients' pages, the commands)."""

from __future__ import annotations

from typing import Literal, get_args

Locale = Literal["pl", "en"]
LOCALES: tuple[Locale, ...] = get_args(Locale)  # in the order a choice lists them
DEFAULT_LOCALE: Locale = "pl"


def locale_named(text: str) -> Locale | None:
    """The locale `text` names exactly, if any."""
    return next((locale for locale in LOCALES if locale == text), None)


def spoken() -> str:
    """The locales as a reason lists them: `pl or en`."""
    return " or ".join(LOCALES)
