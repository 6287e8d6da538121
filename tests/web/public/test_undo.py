"""Going back on an unsubscribe, and confirm links, attacked over real HTTP.

The unsubscribe link sits in every message's headers, so whoever holds it (a forwarded mail,
a mail scanner, another site the person visits) must not be able to subscribe anyone with it.
Each test asserts the status codes an attacker gets and the subscriptions row afterwards.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import pytest

from mailer.config import build_settings
from mailer.core.tokens import Undo, confirm_token, undo_token
from mailer.service import Service
from tests.support.http import base_url
from tests.web.conftest import (
    ANNA,
    KEYS,
    SAME_ORIGIN,
    StartWeb,
    ids,
    link,
    status,
    undo_form,
)

ELSEWHERE = {"Origin": "https://evil.example"}


async def unsubscribed_page(http: aiohttp.ClientSession, url: str) -> str:
    """Anna presses the button on her unsubscribe page; the page she sees next."""
    async with http.post(url, data={"action": "unsubscribe"}, headers=SAME_ORIGIN) as page:
        assert page.status == 200
        return await page.text()


async def test_a_cross_site_post_cannot_resubscribe(
    web: Service, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    """A POST action=resubscribe with no Origin, a foreign one, `null` or a foreign Referer
    (no cookie, no form token) gets 403 and changes nothing."""
    url = await link(db, web)
    async with http.post(url, data={"List-Unsubscribe": "One-Click"}) as response:
        assert response.status == 200
    for headers in ({}, ELSEWHERE, {"Origin": "null"}, {"Referer": "https://evil.example/x"}):
        async with http.post(url, data={"action": "resubscribe"}, headers=headers) as response:
            assert response.status == 403, headers
    assert await status(db) == "unsubscribed"


async def test_the_undo_needs_both_its_token_and_our_origin(
    web: Service, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    url = await link(db, web)
    form = undo_form(await unsubscribed_page(http, url))
    refused = [
        (form, ELSEWHERE),  # a stolen token posted from another site
        (form, {"Origin": "null"}),
        (form, {"Referer": "https://evil.example/u/x"}),
        (form, {}),  # no sign of where it came from: the undo needs one
        ({"action": "resubscribe"}, SAME_ORIGIN),  # no token
        ({**form, "undo": form["undo"][:-1] + "A"}, SAME_ORIGIN),  # an altered token
    ]
    for data, headers in refused:
        async with http.post(url, data=data, headers=headers) as response:
            assert response.status == 403, (data, headers)
    assert await status(db) == "unsubscribed"
    referer = {"Referer": url.replace(base_url(web), "https://mail.lucid.example")}
    async with http.post(url, data=form, headers=referer) as response:
        assert response.status == 200  # a Referer from our own page is enough without Origin
    assert await status(db) == "subscribed"


async def test_an_undo_token_works_only_for_its_subscription(
    web: Service, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    johns_form = undo_form(await unsubscribed_page(http, await link(db, web, "john@example.com")))
    await unsubscribed_page(http, await link(db, web))
    async with http.post(await link(db, web), data=johns_form, headers=SAME_ORIGIN) as response:
        assert response.status == 403
    assert await status(db) == "unsubscribed"
    assert await status(db, "john@example.com") == "unsubscribed"


async def test_an_undo_expires(
    start_web: StartWeb, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    now = [datetime.now(UTC)]
    web = await start_web(undo_minutes=15, clock=lambda: now[0])
    url = await link(db, web)
    form = undo_form(await unsubscribed_page(http, url))
    now[0] += timedelta(minutes=15)
    async with http.post(url, data=form, headers=SAME_ORIGIN) as response:
        assert response.status == 403
        assert "Nie można cofnąć" in await response.text()
    assert await status(db) == "unsubscribed"


async def test_an_undo_is_offered_only_to_the_page_that_unsubscribed(
    web: Service, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    """Neither opening the link later nor a one-click POST hands out an undo."""
    url = await link(db, web)
    async with http.post(url, data={"List-Unsubscribe": "One-Click"}) as response:
        assert 'name="undo"' not in await response.text()
    async with http.get(url) as response:
        assert response.status == 200
        page = await response.text()
    assert "nie jest już zapisany" in page
    assert 'name="undo"' not in page and "resubscribe" not in page
    async with http.post(url, data={"action": "unsubscribe"}, headers=SAME_ORIGIN) as response:
        assert 'name="undo"' not in await response.text()  # it left nobody subscribed
    assert await status(db) == "unsubscribed"


async def test_an_undo_never_turns_pending_into_subscribed(
    web: Service, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    """Someone `pending` who unsubscribes is offered no undo, and no undo token, even a
    genuine one, subscribes them: an undo restores only an unsubscribe from `subscribed`."""
    anna = await ids(db, ANNA)
    await db.execute(
        "UPDATE subscriptions SET status = 'pending' WHERE subscriber_id = $1", anna.subscriber_id
    )
    url = await link(db, web)
    page = await unsubscribed_page(http, url)
    assert 'name="undo"' not in page
    assert await status(db) == "unsubscribed"
    # Even a genuine undo token for this very unsubscribe (as if one had been handed out)
    # restores nobody who was not subscribed: it is bound to an unsubscribe from subscribed.
    changed_at = await db.fetchval(
        "SELECT changed_at FROM subscriptions WHERE subscriber_id = $1", anna.subscriber_id
    )
    micros = (changed_at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    expires = int(web.clock().timestamp()) + 600
    forged = undo_token(KEYS, Undo(anna, micros - 1, expires))  # any other unsubscribe
    async with http.post(
        url, data={"action": "resubscribe", "undo": forged}, headers=SAME_ORIGIN
    ) as response:
        assert response.status == 409
    assert await status(db) == "unsubscribed"


async def test_an_undo_is_void_once_anything_changed(
    web: Service, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    url = await link(db, web)
    form = undo_form(await unsubscribed_page(http, url))
    async with http.post(url, data=form, headers=SAME_ORIGIN) as response:
        assert response.status == 200
    assert await status(db) == "subscribed"
    await unsubscribed_page(http, url)  # she leaves again: the first undo must not undo this
    async with http.post(url, data=form, headers=SAME_ORIGIN) as response:
        assert response.status == 409
        assert "Nie można cofnąć" in await response.text()
    assert await status(db) == "unsubscribed"


async def test_the_page_button_refuses_another_site(
    web: Service, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    """The page's own form refuses a foreign origin; RFC 8058 one-click is always taken."""
    url = await link(db, web)
    for headers in (
        ELSEWHERE,
        {"Origin": "null"},
        {"Referer": "https://evil.example/"},
        {"Referer": "http://[::1/broken"},
    ):
        async with http.post(url, data={"action": "unsubscribe"}, headers=headers) as response:
            assert response.status == 403
    assert await status(db) == "subscribed"
    async with http.post(url, data={"List-Unsubscribe": "One-Click"}, headers=ELSEWHERE) as r:
        assert r.status == 200
    assert await status(db) == "unsubscribed"


async def test_a_confirm_link_replayed_after_unsubscribing_subscribes_nobody(
    web: Service, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    """A confirm link subscribes someone `pending`; replayed after they unsubscribed, it
    gets 410 and leaves them unsubscribed."""
    anna = await ids(db, ANNA)
    await db.execute(
        "UPDATE subscriptions SET status = 'pending' WHERE subscriber_id = $1", anna.subscriber_id
    )
    today = int(web.clock().timestamp() // 86400)
    confirm = f"{base_url(web)}/c/{confirm_token(KEYS, anna, day=today)}"
    async with http.post(confirm) as response:
        assert response.status == 200
    assert await status(db) == "subscribed"
    async with http.post(await link(db, web), data={"List-Unsubscribe": "One-Click"}) as r:
        assert r.status == 200
    for method in ("GET", "POST"):
        async with http.request(method, confirm) as response:
            assert response.status == 410
            assert "Link nieaktualny" in await response.text()
    assert await status(db) == "unsubscribed"


async def test_an_old_confirm_link_does_not_confirm_a_later_request(
    web: Service, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    """A link mailed for an earlier request (since unsubscribed, then pending again later)
    does not stand in for the confirmation of the new one."""
    anna = await ids(db, ANNA)
    today = int(web.clock().timestamp() // 86400)
    old = f"{base_url(web)}/c/{confirm_token(KEYS, anna, day=today - 3)}"
    await db.execute(
        "UPDATE subscriptions SET status = 'pending', changed_at = now() - interval '1 day'"
        " WHERE subscriber_id = $1",
        anna.subscriber_id,
    )
    async with http.post(old) as response:
        assert response.status == 410
    assert await status(db) == "pending"
    fresh = f"{base_url(web)}/c/{confirm_token(KEYS, anna, day=today - 1)}"
    async with http.post(fresh) as response:
        assert response.status == 200
    assert await status(db) == "subscribed"
    async with http.post(fresh) as response:
        assert response.status == 200  # repeating it changes nothing and says so
        assert "Zapis potwierdzony" in await response.text()
    assert await status(db) == "subscribed"


@pytest.mark.parametrize(
    ("public_url", "origin"),
    [
        ("https://mail.lucid.example", "https://mail.lucid.example"),
        ("https://Mail.Lucid.Example:443/", "https://mail.lucid.example"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:80/mail", "http://[::1]"),
    ],
)
def test_our_origin_is_that_of_public_url(public_url: str, origin: str) -> None:
    assert build_settings({"http": {"public_url": public_url}}).http.public_origin == origin
