"""The mailing lists of the settings, with the ids the database gives them (the ids go into
tokens): read at start (a list is made on its first use); the parts built after it (the
pages, the intake) take them from here."""

from __future__ import annotations

from collections.abc import Mapping

from mailer.adapters.subscribers import Subscribers
from mailer.config import ListSettings
from mailer.core.audience import MailingList
from mailer.core.messages import Mailbox
from mailer.parts import Checks


class MailingLists:
    name = "mailing lists"

    def __init__(
        self,
        subscribers: Subscribers,
        settings: Mapping[str, ListSettings],
        senders: Mapping[str, Mailbox],
    ) -> None:
        self._subscribers = subscribers
        self._settings = settings
        self._senders = senders
        self.by_slug: dict[str, MailingList] = {}
        self.by_id: dict[int, MailingList] = {}

    async def start(self) -> None:
        ids = await self._subscribers.list_ids(self._settings)
        for slug, lst in self._settings.items():
            found = MailingList(ids[slug], slug, lst.name, self._senders[slug], lst.default_locale)
            self.by_slug[slug] = found
            self.by_id[found.id] = found

    async def stop(self) -> None:
        return None

    async def readiness(self) -> Checks:
        return {}
