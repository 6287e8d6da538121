"""What an operator reads on the console's pages, over HTTP against the running services:
counts by their own names, every time in one format, a scheduled issue's start, a finished
issue's last send, receipts and confirmations each called so, and nothing half-rendered."""

from __future__ import annotations

import html
import re
import uuid

import aiohttp

from tests.support.http import base_url
from tests.web.console.conftest import Console

MOMENT = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")
# The confirmation mail's job id follows from the subscription job's (worker/subscriptions.py).
CONFIRMATION_IDS = uuid.UUID("6f0d4c1e-4a51-4f4e-9f7a-2b8c0f6d9e31")


def text_of(page: str) -> str:
    """The page as read: tags dropped (a block's end spaces it from what follows), entities
    decoded, spaces collapsed."""
    inline = re.sub(r"</?(?:a|span|code)\b[^>]*>", "", page)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", inline)))


async def page(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as response:
        assert response.status == 200, url
        return await response.text()


async def test_both_listeners_serve_our_icon_to_anyone(console: Console) -> None:
    """/favicon.ico on the console (no session needed) and on the public listener, the
    same small ICO of our own; the public pages' policy lets them show it."""
    public = base_url(console.service)
    async with aiohttp.ClientSession() as anyone:
        icons = []
        for url in (console.url, public):
            async with anyone.get(url + "/favicon.ico", allow_redirects=False) as response:
                assert response.status == 200, url
                assert response.content_type == "image/vnd.microsoft.icon"
                icons.append(await response.read())
        async with anyone.get(public + "/u/not-a-token") as response:
            policy = response.headers["Content-Security-Policy"]
    assert icons[0] == icons[1]
    assert icons[0][:4] == b"\x00\x00\x01\x00"  # an ICO file
    assert "img-src 'self'" in policy
