"""The pages a recipient reaches from a message: unsubscribe (with undo) and confirm.

GET and HEAD only show: mail scanners follow every link. Changes happen on POST: the page's
button, or an RFC 8058 one-click POST (`List-Unsubscribe=One-Click`, urlencoded or multipart,
no cookies), answered 200 without a redirect. Repeating a POST changes nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Literal

import jinja2
from aiohttp import web

from mailer.adapters.subscribers import Source, Standing, Subscribers
from mailer.core.addresses import mask_address
from mailer.core.audience import MailingList
from mailer.core.consent import SubscriptionStatus
from mailer.core.tokens import (
    Subscription,
    TokenKeys,
    read_confirm_token,
    read_unsubscribe_token,
)
from mailer.web.limits import InvalidAttempts
from mailer.web.strings import STRINGS, Locale

log = logging.getLogger(__name__)
Action = Literal["unsubscribe", "resubscribe", "confirm"]
Result = Literal["unsubscribed", "resubscribed", "confirmed"]


class RecipientPages:
    def __init__(
        self,
        *,
        subscribers: Subscribers,
        lists: Mapping[int, MailingList],
        token_keys: TokenKeys,
        templates_dir: Path,
        confirm_days: int,
        invalid_token_limit: int,
        clock: Callable[[], datetime],
    ) -> None:
        self._subscribers = subscribers
        self._lists = lists
        self._keys = token_keys
        self._confirm_days = confirm_days
        self._attempts = InvalidAttempts(invalid_token_limit)
        self._clock = clock
        folder = templates_dir / "_pages"
        environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(folder)),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            auto_reload=False,
        )
        self._page = environment.get_template("page.html.j2")
        self._css = (folder / "page.css").read_bytes()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/u/{token}", self._unsubscribe_page)
        app.router.add_post("/u/{token}", self._unsubscribe_post)
        app.router.add_get("/c/{token}", self._confirm_page)
        app.router.add_post("/c/{token}", self._confirm_post)
        app.router.add_get("/static/page.css", self._stylesheet)

    # Tokens -----------------------------------------------------------------------------

    def _unsubscribe_subscription(self, request: web.Request) -> Subscription | None:
        found = read_unsubscribe_token(self._keys, request.match_info["token"])
        return found if found is not None and found.list_id in self._lists else None

    def _confirm_subscription(self, request: web.Request) -> Subscription | None:
        today = int(self._clock().timestamp() // 86400)
        found = read_confirm_token(
            self._keys, request.match_info["token"], today=today, max_age_days=self._confirm_days
        )
        return found if found is not None and found.list_id in self._lists else None

    def _invalid(self, request: web.Request) -> web.Response:
        locale = _accepted_locale(request)
        source = request.remote or "unknown"
        if self._attempts.refused(source):
            log.warning("too many invalid links from one source; refusing for a minute")
            return self._render(locale, "limited", status=429, headers={"Retry-After": "60"})
        return self._render(locale, "invalid", status=400)

    # Handlers ---------------------------------------------------------------------------

    async def _unsubscribe_page(self, request: web.Request) -> web.Response:
        subscription = self._unsubscribe_subscription(request)
        if subscription is None:
            return self._invalid(request)
        standing = await self._subscribers.standing(
            subscription.subscriber_id, subscription.list_id
        )
        mailing_list = self._lists[subscription.list_id]
        if standing is None:
            return self._render(_accepted_locale(request), "not_subscribed")
        if standing.status == "unsubscribed":
            return self._outcome(standing, mailing_list, "unsubscribed")
        return self._question(standing, mailing_list, "unsubscribe")

    async def _unsubscribe_post(self, request: web.Request) -> web.Response:
        subscription = self._unsubscribe_subscription(request)
        if subscription is None:
            return self._invalid(request)
        form = await request.post()
        one_click = form.get("List-Unsubscribe") == "One-Click"
        action = "unsubscribe" if one_click else form.get("action")
        if action not in ("unsubscribe", "resubscribe"):
            return self._render(_accepted_locale(request), "bad_request", status=400)
        source: Source = "one-click" if one_click else "page"
        status: SubscriptionStatus = "unsubscribed" if action == "unsubscribe" else "subscribed"
        before = await self._subscribers.set_status(
            subscription.subscriber_id, subscription.list_id, status, source
        )
        standing = await self._subscribers.standing(
            subscription.subscriber_id, subscription.list_id
        )
        if before is None or standing is None:
            return self._render(_accepted_locale(request), "not_subscribed")
        log.info("%s list=%s via %s (was %s)", action, subscription.list_id, source, before)
        result: Result = "unsubscribed" if action == "unsubscribe" else "resubscribed"
        return self._outcome(standing, self._lists[subscription.list_id], result)

    async def _confirm_page(self, request: web.Request) -> web.Response:
        subscription = self._confirm_subscription(request)
        if subscription is None:
            return self._invalid(request)
        standing = await self._subscribers.standing(
            subscription.subscriber_id, subscription.list_id
        )
        if standing is None:
            return self._invalid(request)
        mailing_list = self._lists[subscription.list_id]
        if standing.status == "subscribed":
            return self._outcome(standing, mailing_list, "confirmed")
        return self._question(standing, mailing_list, "confirm")

    async def _confirm_post(self, request: web.Request) -> web.Response:
        subscription = self._confirm_subscription(request)
        if subscription is None:
            return self._invalid(request)
        before = await self._subscribers.set_status(
            subscription.subscriber_id, subscription.list_id, "subscribed", "confirmation"
        )
        standing = await self._subscribers.standing(
            subscription.subscriber_id, subscription.list_id
        )
        if before is None or standing is None:
            return self._invalid(request)
        log.info("subscription confirmed list=%s", subscription.list_id)
        return self._outcome(standing, self._lists[subscription.list_id], "confirmed")

    async def _stylesheet(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._css,
            content_type="text/css",
            headers={"Cache-Control": "public, max-age=3600"},
        )

    # Rendering --------------------------------------------------------------------------

    def _question(
        self, standing: Standing, mailing_list: MailingList, action: Action
    ) -> web.Response:
        locale = _locale_of(standing, mailing_list)
        strings = STRINGS[locale]
        values = _values(standing, mailing_list)
        return self._html(
            locale,
            strings[f"{action}_title"],
            strings[f"{action}_question"].format(**values),
            button=strings[f"{action}_button"],
            action=action,
        )

    def _outcome(
        self,
        standing: Standing,
        mailing_list: MailingList,
        result: Result,
    ) -> web.Response:
        locale = _locale_of(standing, mailing_list)
        strings = STRINGS[locale]
        text = strings[f"{result}_text"].format(**_values(standing, mailing_list))
        if result == "unsubscribed":  # the undo
            return self._html(
                locale,
                strings["unsubscribed_title"],
                text,
                button=strings["resubscribe_button"],
                action="resubscribe",
                hint=strings["undo_text"],
            )
        if result == "resubscribed":
            return self._html(
                locale,
                strings["resubscribed_title"],
                text,
                button=strings["unsubscribe_button"],
                action="unsubscribe",
            )
        return self._html(locale, strings["confirmed_title"], text)

    def _render(
        self,
        locale: Locale,
        page: str,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        strings = STRINGS[locale]
        return self._html(
            locale,
            strings[f"{page}_title"],
            strings[f"{page}_text"],
            status=status,
            headers=headers,
        )

    def _html(
        self,
        locale: Locale,
        title: str,
        text: str,
        *,
        button: str | None = None,
        action: str | None = None,
        hint: str | None = None,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        body = self._page.render(
            locale=locale, title=title, text=text, button=button, action=action, hint=hint
        )
        return web.Response(
            text=body, content_type="text/html", status=status, headers=dict(headers or {})
        )


def _values(standing: Standing, mailing_list: MailingList) -> dict[str, str]:
    return {"address": mask_address(standing.subscriber.email), "list": mailing_list.name}


def _locale_of(standing: Standing, mailing_list: MailingList) -> Locale:
    return standing.subscriber.locale or mailing_list.default_locale


def _accepted_locale(request: web.Request) -> Locale:
    header = request.headers.get("Accept-Language", "")
    for part in header.split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("pl"):
            return "pl"
        if tag.startswith("en"):
            return "en"
    return "pl"
