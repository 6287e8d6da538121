"""An issue job pasted into the console: rendered per locale, the HTML in a sandboxed frame
that may load nothing, the text beside it; a bad job told, nothing sent or stored."""

from __future__ import annotations

import json
import re

import aiohttp
import asyncpg

from tests.support.newsletters import issue
from tests.support.smtp import SmtpServer
from tests.web.console.conftest import Console, log_in


async def test_a_pasted_issue_is_rendered_per_locale_in_a_sandboxed_frame(
    console: Console, http: aiohttp.ClientSession, db: asyncpg.Connection, smtp_server: SmtpServer
) -> None:
    csrf = await log_in(http, console, "victor")  # a viewer may look
    job = issue(subject={"pl": "Nowości <script>alert(1)</script>", "en": "News of the month"})
    async with http.post(
        console.url + "/preview",
        data={"csrf": csrf, "job": json.dumps(job), "name": "Anna"},
        headers=console.origin,
    ) as response:
        page = await response.text()
        assert response.status == 200, re.findall(r'class="error"[^<]*', page)
        policy = response.headers["Content-Security-Policy"]
    assert "frame-src 'self'" in policy and "default-src 'none'" in policy
    assert "<script>alert(1)</script>" not in page
    assert "Nowości &lt;script&gt;alert(1)&lt;/script&gt;" in page
    frames = re.findall(r'<iframe sandbox src="(/preview/[^"]+)"', page)
    assert [f.rsplit("/", 1)[1] for f in frames] == ["pl", "en"]
    assert "Przeciągnij i upuść szanse sprzedaży." in page  # the text part, shown as text

    async with http.get(console.url + frames[0]) as response:
        assert response.status == 200
        html = await response.text()
        headers = response.headers
    assert "Przeciągnij i upuść szanse sprzedaży.</p>" in html
    assert "Anna" in html
    assert "sandbox" in headers["Content-Security-Policy"]
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "script-src" not in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "SAMEORIGIN"
    assert "/u/test-message-no-unsubscribe" in html  # no real unsubscribe token

    for bad in (f"{frames[0].rsplit('/', 1)[0]}/de", "/preview/nothing-kept/pl"):
        async with http.get(console.url + bad) as response:
            assert response.status == 404

    for pasted, message in (
        ("{not json", "not a valid issue"),
        (json.dumps(issue(list="no-such-list")), "no list &#39;no-such-list&#39;"),
        ("[" * 20_000 + "]" * 20_000, "not a valid issue"),
        (json.dumps(issue(subject={"pl": "a\u2028b", "en": "x"})), "subject: contains a line"),
    ):
        async with http.post(
            console.url + "/preview",
            data={"csrf": csrf, "job": pasted},
            headers=console.origin,
        ) as response:
            assert response.status == 400
            page = await response.text()
        assert message in page, page[-2000:]
        assert "<iframe" not in page
    assert smtp_server.received == []
    assert await db.fetchval("SELECT count(*) FROM issues") == 0

    async with (
        aiohttp.ClientSession() as stranger,  # logged out: refused
        stranger.get(console.url + frames[1], allow_redirects=False) as response,
    ):
        assert response.status in (302, 303, 401)
