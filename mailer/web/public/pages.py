"""The pages a recipient reaches from a message: unsubscribe (with undo) and confirm.

GET and HEAD only show: mail scanners follow every link. Changes happen on POST: the page's
button, or an RFC 8058 one-click POST (`List-Unsubscribe=One-Click`, urlencoded or multipart,
no cookies), answered 200 without a redirect. Repeating a POST changes nothing more.

The unsubscribe link is in every message's headers, so it can only ever unsubscribe. Going
back ("subscribe me again") needs what only the page that just unsubscribed hands out: a
signed undo token, valid for `undo_minutes`, for an unsubscribe that left `subscribed`, and
usable only while nothing changed since. It also needs the browser to say the POST came from
our own origin (`Origin`, else `Referer`): a cross-site POST gets 403 and changes nothing.
The page's own unsubscribe button refuses a foreign origin too; the one-click POST comes from
mail providers' servers with no origin at all and is always taken.

A confirm link subscribes only someone still `pending` since before the link was made.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import jinja2
from aiohttp import web

from mailer.adapters.subscribers import Source, Standing, Subscribers
from mailer.config import HttpSettings
from mailer.core.addresses import mask_address
from mailer.core.audience import MailingList
from mailer.core.locales import DEFAULT_LOCALE, Locale, locale_named
from mailer.core.tokens import (
    Confirmation,
    Subscription,
    TokenKeys,
    Undo,
    read_confirm_token,
    read_undo_token,
    read_unsubscribe_token,
    undo_token,
)
from mailer.core.trials import trial_link
from mailer.web.limits import InvalidAttempts, source_of
from mailer.web.listener import client_of
from mailer.web.public.strings import STRINGS

log = logging.getLogger(__name__)
Action = Literal["unsubscribe", "resubscribe", "confirm"]
Result = Literal["unsubscribed", "resubscribed", "confirmed"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_UNKNOWN_SOURCE = (0, 0)  # a peer with no IP address (a Unix socket)


@dataclass(frozen=True, slots=True)
class Form:
    """A page's one button: the action it posts, with an undo token and a hint for an undo."""

    button: str
    action: Action
    undo: str | None = None
    hint: str | None = None


class RecipientPages:
    def __init__(
        self,
        *,
        subscribers: Subscribers,
        lists: Mapping[int, MailingList],
        token_keys: TokenKeys,
        templates_dir: Path,
        confirm_days: int,
        http: HttpSettings,
        clock: Callable[[], datetime],
    ) -> None:
        self._subscribers = subscribers
        self._lists = lists
        self._keys = token_keys
        self._confirm_days = confirm_days
        self._attempts = InvalidAttempts(http.invalid_token_limit, max_sources=http.limited_sources)
        self._origin = http.public_origin
        self._undo_seconds = http.undo_minutes * 60
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

    def _confirmation(self, request: web.Request) -> Confirmation | None:
        today = int(self._clock().timestamp() // 86400)
        found = read_confirm_token(
            self._keys, request.match_info["token"], today=today, max_age_days=self._confirm_days
        )
        return found if found is not None and found.subscription.list_id in self._lists else None

    def _invalid(self, request: web.Request) -> web.Response:
        locale = _accepted_locale(request)
        client = client_of(request)
        wait = self._attempts.refused(_UNKNOWN_SOURCE if client is None else source_of(client))
        if wait is not None:
            log.warning("too many invalid links from one source; refusing for %ds", wait)
            return self._render(locale, "limited", status=429, headers={"Retry-After": str(wait)})
        return self._render(locale, "invalid", status=400)

    def _trial_link(self, request: web.Request, *, status: int) -> web.Response | None:
        """A test message's unsubscribe link, which unsubscribes nobody: the page says so in
        the message's language (the reader's, for a link that does not name it)."""
        found, locale = trial_link(request.match_info["token"])
        if not found:
            return None
        return self._render(locale or _accepted_locale(request), "trial_link", status=status)

    def _origin_of(self, request: web.Request) -> Literal["ours", "none", "foreign"]:
        """Where the browser says a POST came from: `Origin`, else the origin of `Referer`."""
        origin = request.headers.get("Origin")
        if origin is None:
            referer = request.headers.get("Referer")
            if referer is None:
                return "none"
            try:
                parts = urlsplit(referer)
            except ValueError:  # e.g. an unclosed IPv6 bracket
                return "foreign"
            origin = f"{parts.scheme}://{parts.netloc}"
        return "ours" if origin.strip().lower() == self._origin.lower() else "foreign"

    # Handlers ---------------------------------------------------------------------------

    def _subscription_or_answer(
        self, request: web.Request, *, trial_status: int
    ) -> Subscription | web.Response:
        """The subscription an unsubscribe link names, or the page that says why there is
        none (a test message's link, or a link that is not valid)."""
        if (answer := self._trial_link(request, status=trial_status)) is not None:
            return answer
        subscription = self._unsubscribe_subscription(request)
        return self._invalid(request) if subscription is None else subscription

    async def _standing(self, subscription: Subscription) -> Standing | None:
        return await self._subscribers.standing(subscription.subscriber_id, subscription.list_id)

    async def _unsubscribe_page(self, request: web.Request) -> web.Response:
        subscription = self._subscription_or_answer(request, trial_status=200)
        if isinstance(subscription, web.Response):
            return subscription
        standing = await self._standing(subscription)
        mailing_list = self._lists[subscription.list_id]
        if standing is None:
            return self._render(_accepted_locale(request), "not_subscribed")
        if standing.status == "unsubscribed":  # no undo: that belongs to the unsubscribing POST
            return self._outcome(standing, mailing_list, "unsubscribed")
        return self._question(standing, mailing_list, "unsubscribe")

    async def _unsubscribe_post(self, request: web.Request) -> web.Response:
        subscription = self._subscription_or_answer(request, trial_status=400)
        if isinstance(subscription, web.Response):
            return subscription
        form = await request.post()  # read already, in time (mailer/web/listener.py)
        if form.get("List-Unsubscribe") == "One-Click":
            return await self._unsubscribe(request, subscription, "one-click")
        return await self._page_action(request, subscription, form)

    async def _page_action(
        self, request: web.Request, subscription: Subscription, form: Mapping[str, object]
    ) -> web.Response:
        """The page's own buttons: unsubscribe, and its undo."""
        action = form.get("action")
        if action not in ("unsubscribe", "resubscribe"):
            return self._render(_accepted_locale(request), "bad_request", status=400)
        origin = self._origin_of(request)
        if origin == "foreign" or (action == "resubscribe" and origin != "ours"):
            log.warning("%s refused: the POST came from another origin", action)
            return self._render(_accepted_locale(request), "forbidden", status=403)
        if action == "unsubscribe":
            return await self._unsubscribe(request, subscription, "page")
        return await self._resubscribe(request, subscription, form.get("undo"))

    async def _unsubscribe(
        self, request: web.Request, subscription: Subscription, source: Source
    ) -> web.Response:
        before = await self._subscribers.unsubscribe(
            subscription.subscriber_id, subscription.list_id, source
        )
        standing = await self._standing(subscription)
        if before is None or standing is None:
            return self._render(_accepted_locale(request), "not_subscribed")
        log.info("unsubscribe list=%s via %s (was %s)", subscription.list_id, source, before)
        undo = None
        if source == "page" and before == "subscribed" and standing.status == "unsubscribed":
            undo = undo_token(
                self._keys,
                Undo(
                    subscription,
                    unsubscribed_at=(standing.changed_at - _EPOCH) // _MICROSECOND,
                    expires=int(self._clock().timestamp()) + self._undo_seconds,
                ),
            )
        return self._outcome(standing, self._lists[subscription.list_id], "unsubscribed", undo)

    async def _resubscribe(
        self, request: web.Request, subscription: Subscription, token: object
    ) -> web.Response:
        now = int(self._clock().timestamp())
        undo = read_undo_token(self._keys, token, now=now) if isinstance(token, str) else None
        if undo is None or undo.subscription != subscription:
            return self._render(_accepted_locale(request), "undo_expired", status=403)
        undone = await self._subscribers.undo_unsubscribe(
            subscription.subscriber_id,
            subscription.list_id,
            _EPOCH + undo.unsubscribed_at * _MICROSECOND,
        )
        standing = await self._standing(subscription)
        if standing is None:
            return self._render(_accepted_locale(request), "not_subscribed")
        if not undone:
            return self._render(_accepted_locale(request), "undo_stale", status=409)
        log.info("unsubscribe undone list=%s", subscription.list_id)
        return self._outcome(standing, self._lists[subscription.list_id], "resubscribed")

    async def _confirm_page(self, request: web.Request) -> web.Response:
        confirmation = self._confirmation(request)
        if confirmation is None:
            return self._invalid(request)
        subscription = confirmation.subscription
        standing = await self._standing(subscription)
        if standing is None:
            return self._invalid(request)
        mailing_list = self._lists[subscription.list_id]
        if standing.status == "subscribed":
            return self._outcome(standing, mailing_list, "confirmed")
        if standing.status != "pending":
            return self._render(_locale_of(standing, mailing_list), "confirm_stale", status=410)
        return self._question(standing, mailing_list, "confirm")

    async def _confirm_post(self, request: web.Request) -> web.Response:
        confirmation = self._confirmation(request)
        if confirmation is None:
            return self._invalid(request)
        subscription = confirmation.subscription
        confirmed = await self._subscribers.confirm(
            subscription.subscriber_id, subscription.list_id, confirmation.day
        )
        standing = await self._standing(subscription)
        if standing is None:
            return self._invalid(request)
        mailing_list = self._lists[subscription.list_id]
        if not confirmed and standing.status != "subscribed":
            log.info("stale confirm link refused list=%s", subscription.list_id)
            return self._render(_locale_of(standing, mailing_list), "confirm_stale", status=410)
        if confirmed:
            log.info("subscription confirmed list=%s", subscription.list_id)
        return self._outcome(standing, mailing_list, "confirmed")

    def timed_out(self, request: web.Request) -> web.Response:
        """The answer to a body that did not arrive within the read timeout."""
        return self._render(_accepted_locale(request), "timeout", status=408)

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
            Form(strings[f"{action}_button"], action),
        )

    def _outcome(
        self,
        standing: Standing,
        mailing_list: MailingList,
        result: Result,
        undo: str | None = None,
    ) -> web.Response:
        locale = _locale_of(standing, mailing_list)
        strings = STRINGS[locale]
        text = strings[f"{result}_text"].format(**_values(standing, mailing_list))
        if result == "unsubscribed" and undo is not None:
            undoing = Form(strings["resubscribe_button"], "resubscribe", undo, strings["undo_text"])
            return self._html(locale, strings["unsubscribed_title"], text, undoing)
        if result == "unsubscribed":
            return self._html(locale, strings["unsubscribed_title"], text)
        if result == "resubscribed":
            again = Form(strings["unsubscribe_button"], "unsubscribe")
            return self._html(locale, strings["resubscribed_title"], text, again)
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
        form: Form | None = None,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        body = self._page.render(locale=locale, title=title, text=text, form=form)
        return web.Response(
            text=body, content_type="text/html", status=status, headers=dict(headers or {})
        )


def _values(standing: Standing, mailing_list: MailingList) -> dict[str, str]:
    return {"address": mask_address(standing.subscriber.email), "list": mailing_list.name}


def _locale_of(standing: Standing, mailing_list: MailingList) -> Locale:
    return standing.subscriber.locale or mailing_list.default_locale


def _accepted_locale(request: web.Request) -> Locale:
    """The language the reader's browser prefers most (RFC 9110 quality values; the first
    named wins a tie) of those the pages speak; Polish when it names neither."""
    header = request.headers.get("Accept-Language", "")
    best: tuple[float, Locale] | None = None
    for part in header.split(",", 32)[:32]:  # a browser names a handful
        tag, _, params = part.partition(";")
        language = tag.strip().lower().split("-", 1)[0]
        locale = locale_named(language)
        if locale is None:
            continue
        quality = _quality(params)
        if quality > 0 and (best is None or quality > best[0]):
            best = (quality, locale)
    return best[1] if best is not None else DEFAULT_LOCALE


def _quality(params: str) -> float:
    name, _, value = params.strip().partition("=")
    if name.strip().lower() != "q":
        return 1.0
    try:
        quality = float(value.strip()[:5])
    except ValueError:
        return 0.0
    return quality if 0 <= quality <= 1 else 0.0
