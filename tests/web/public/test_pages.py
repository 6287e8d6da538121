"""The recipients' pages through real HTTP: unsubscribe, one-click, undo, confirm, forgeries."""

from __future__ import annotations

import base64
import re
from typing import Any

import aiohttp
import asyncpg
import pytest

from mailer.core.tokens import Subscription, TokenKeys, confirm_token, unsubscribe_token
from mailer.service import Service
from tests.support.http import base_url
from tests.web.conftest import ANNA, KEYS, SAME_ORIGIN, ids, link, status, undo_form


async def test_get_and_head_show_a_page_and_change_nothing(
    web: Service, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    url = await link(db, web)
    for _ in range(3):
        async with http.head(url) as response:
            assert response.status == 200
        async with http.get(url) as response:
            assert response.status == 200
            page = await response.text()
    assert await status(db) == "subscribed"
    assert "Czy wypisać adres a***k@e***e.pl z listy Lucid News?" in page
    assert "Wypisz mnie" in page
    assert ANNA not in page
    english = await (await http.get(await link(db, web, "john@example.com"))).text()
    assert "Unsubscribe j***n@e***e.com from Lucid News?" in english


async def test_pages_are_locked_down(
    web: Service, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    async with http.get(await link(db, web)) as response:
        page = await response.text()
        headers = response.headers
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert "form-action 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"  # the form POSTs carry our Origin
    assert headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in headers
    assert re.findall(r'(?:src|href)="([^"]+)"', page) == ["/static/page.css"]  # nothing external
    async with http.get(base_url(web) + "/static/page.css") as response:
        assert response.status == 200
        assert response.content_type == "text/css"


async def test_the_button_unsubscribes_at_once_and_offers_an_undo(
    web: Service, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    url = await link(db, web)
    async with http.post(url, data={"action": "unsubscribe"}, headers=SAME_ORIGIN) as page:
        assert page.status == 200
        first = await page.text()
    assert await status(db) == "unsubscribed"
    async with http.post(url, data={"action": "unsubscribe"}, allow_redirects=False) as page:
        assert page.status == 200  # idempotent; no Origin at all is taken for unsubscribing
        assert "nie jest już zapisany na listę Lucid News" in await page.text()
    assert await status(db) == "unsubscribed"
    assert "nie jest już zapisany na listę Lucid News" in first
    assert 'value="resubscribe"' in first
    async with http.post(url, data=undo_form(first), headers=SAME_ORIGIN) as page:
        assert page.status == 200
        assert "jest znów zapisany" in await page.text()
    assert await status(db) == "subscribed"
    source = await db.fetchval(
        "SELECT source FROM subscriptions WHERE subscriber_id = $1",
        (await ids(db, ANNA)).subscriber_id,
    )
    assert source == "page"


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
async def test_rfc_8058_one_click(
    web: Service, http: aiohttp.ClientSession, db: asyncpg.Connection, encoding: str
) -> None:
    url = await link(db, web)
    if encoding == "urlencoded":
        body: Any = {"List-Unsubscribe": "One-Click"}
    else:
        body = aiohttp.FormData(default_to_multipart=True)
        body.add_field("List-Unsubscribe", "One-Click")
    async with http.post(url, data=body, allow_redirects=False) as response:
        assert response.status == 200
        assert "Set-Cookie" not in response.headers
    assert await status(db) == "unsubscribed"
    assert (
        await db.fetchval(
            "SELECT source FROM subscriptions s JOIN subscribers p"
            " ON p.id = s.subscriber_id WHERE p.email = $1",
            ANNA,
        )
        == "one-click"
    )


async def test_a_post_without_a_known_action_changes_nothing(
    web: Service, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    async with http.post(await link(db, web), data={"action": "explode"}) as response:
        assert response.status == 400
    assert await status(db) == "subscribed"


def forged(token: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[index] ^= 0x40
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


async def test_forged_altered_truncated_and_cross_list_tokens_change_nothing(
    web: Service, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    anna = await ids(db, ANNA)
    good = unsubscribe_token(KEYS, anna)
    other_list = await db.fetchval("SELECT id FROM lists WHERE slug = 'other-news'")
    cross_list = unsubscribe_token(KEYS, Subscription(anna.subscriber_id, other_list))
    bad_tokens = [
        forged(good, 3),  # another subscriber
        forged(good, 7),  # another list
        forged(good, 15),  # the signature
        good[:-2],
        good + "AA",
        unsubscribe_token(TokenKeys.from_secrets(b"x" * 40), anna),  # someone else's key
        confirm_token(KEYS, anna, day=0),  # a confirm token is not an unsubscribe token
    ]
    for token in bad_tokens:
        for method in ("GET", "POST"):
            async with http.request(
                method, f"{base_url(web)}/u/{token}", data={"List-Unsubscribe": "One-Click"}
            ) as response:
                assert response.status == 400, token
                assert "Nieprawidłowy link" in await response.text()
    async with http.post(
        f"{base_url(web)}/u/{cross_list}", data={"List-Unsubscribe": "One-Click"}
    ) as response:
        assert response.status == 200  # valid, but Anna is not on that list
        assert "nie jest zapisany" in await response.text()
    assert await status(db) == "subscribed"


async def test_guessing_is_rate_limited_but_valid_links_never_are(
    web: Service, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    statuses = []
    for n in range(25):
        async with http.get(f"{base_url(web)}/u/{'A' * 27}{chr(66 + n % 20)}") as response:
            statuses.append(response.status)
    assert statuses[:20] == [400] * 20
    assert set(statuses[20:]) == {429}
    async with http.get(f"{base_url(web)}/u/forged") as response:
        assert response.status == 429
        assert 1 <= int(response.headers["Retry-After"]) <= 60
    url = await link(db, web)
    async with http.get(url) as response:
        assert response.status == 200
    async with http.post(url, data={"List-Unsubscribe": "One-Click"}) as response:
        assert response.status == 200
    assert await status(db) == "unsubscribed"


async def test_confirmation_links(
    web: Service, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    anna = await ids(db, ANNA)
    await db.execute(
        "UPDATE subscriptions SET status = 'pending' WHERE subscriber_id = $1", anna.subscriber_id
    )
    today = int(web.clock().timestamp() // 86400)
    url = f"{base_url(web)}/c/{confirm_token(KEYS, anna, day=today)}"
    async with http.get(url) as response:
        assert response.status == 200
        assert "Czy zapisać adres a***k@e***e.pl na listę Lucid News?" in await response.text()
    assert await status(db) == "pending"
    async with http.post(url, allow_redirects=False) as response:
        assert response.status == 200
        assert "Zapis potwierdzony" in await response.text()
    assert await status(db) == "subscribed"
    expired = f"{base_url(web)}/c/{confirm_token(KEYS, anna, day=today - 15)}"
    async with http.post(expired) as response:
        assert response.status == 400
    unsubscribe_as_confirm = f"{base_url(web)}/c/{unsubscribe_token(KEYS, anna)}"
    async with http.post(unsubscribe_as_confirm) as response:
        assert response.status == 400


async def test_a_test_messages_link_says_so_in_the_messages_language(
    web: Service, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    """A test send's unsubscribe link names the message's locale: its page is in that
    language whatever the reader's browser asks, and unsubscribes nobody. Without one, and
    on every other page with no subscriber to follow, the reader's most preferred language
    (by quality, RFC 9110) is used."""
    base = base_url(web)
    for path, asked, title in (
        ("/u/test-message-no-unsubscribe.en", {}, "Test message"),
        ("/u/test-message-no-unsubscribe.en", {"Accept-Language": "pl"}, "Test message"),
        ("/u/test-message-no-unsubscribe.pl", {"Accept-Language": "en-GB,en"}, "Wiadomość testowa"),
        ("/u/test-message-no-unsubscribe", {"Accept-Language": "pl;q=0.3, en-US"}, "Test message"),
        ("/u/not-a-token", {"Accept-Language": "pl;q=0.2,en;q=0.9,*;q=0.1"}, "Invalid link"),
        ("/u/not-a-token", {"Accept-Language": "en;q=0,pl;q=0.5"}, "Nieprawidłowy link"),
        ("/u/not-a-token", {"Accept-Language": "de-DE,de;q=0.9,en;q=0.8"}, "Invalid link"),
    ):
        async with http.get(base + path, headers=asked) as response:
            page = await response.text()
        assert f"<h1>{title}</h1>" in page, (path, asked, page)
        assert f'<html lang="{"pl" if title[0] in "NW" else "en"}">' in page, (path, asked)
    async with http.post(
        base + "/u/test-message-no-unsubscribe.en", data={"List-Unsubscribe": "One-Click"}
    ) as response:
        assert response.status == 400
        assert "<h1>Test message</h1>" in await response.text()
    assert await status(db) == "subscribed"
