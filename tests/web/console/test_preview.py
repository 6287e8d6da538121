"""An issue job pasted into the console: rendered per locale, the HTML in a sandboxed frame
that may load nothing, the text beside it; a bad job told, nothing sent or stored."""

from __future__ import annotations

import json
import re

import aiohttp
import asyncpg
import dkim

from tests.conftest import DkimKeys
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


async def test_an_operator_sends_a_test_that_arrives_marked_signed_and_counted_nowhere(
    console: Console,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    smtp_server: SmtpServer,
    dkim_keys: DkimKeys,
) -> None:
    job = issue()
    csrf = await log_in(http, console, "alice")
    async with http.post(
        console.url + "/preview/test",
        data={
            "csrf": csrf,
            "job": json.dumps(job),
            "to": "Jan Tester <jan@lucid.example>\r\n\r\nqa@lucid.example\r\n",
            "locale": "en",
        },
        headers=console.origin,
    ) as response:
        page = await response.text()
        assert response.status == 200, re.findall(r'class="error"[^<]*', page)
    assert "2 of 2 test message(s) sent (j***n@l***d.example, q***@l***d.example)" in page
    assert page.count('<td class="ok">yes</td>') == 2
    assert "<iframe sandbox" in page  # the preview shown again beside the result

    received = sorted(smtp_server.received, key=lambda r: r.rcpt_tos[0])
    assert [r.rcpt_tos for r in received] == [("jan@lucid.example",), ("qa@lucid.example",)]
    for message in received:
        assert dkim.DKIM(message.data).verify(dnsfunc=dkim_keys.dns)
        parsed = message.parsed()
        assert parsed["Subject"] == "[TEST] What's new in LucidCRM — November 2026"
        assert parsed["X-Mailer-Test"] == job["id"]
        assert "/u/test-message-no-unsubscribe" in parsed["List-Unsubscribe"]
    assert await db.fetchval("SELECT count(*) FROM deliveries") == 0
    assert await db.fetchval("SELECT count(*) FROM issues") == 0
    audit = await db.fetchrow(
        "SELECT operator, target, result, detail FROM console_audit WHERE action = 'test send'"
    )
    assert audit is not None
    assert dict(audit) == {
        "operator": "alice",
        "target": f"issue {job['id']}",
        "result": "done",
        "detail": "2 of 2 test message(s) sent (j***n@l***d.example, q***@l***d.example)",
    }

    # The API, with the job as a JSON object; the list's default locale (pl).
    async with http.post(
        console.url + "/api/preview/test",
        json={"job": job, "to": ["api@lucid.example"]},
        headers={**console.origin, "X-CSRF-Token": csrf},
    ) as response:
        assert response.status == 200
        answer = await response.json()
    assert answer["ok"] is True
    [result] = answer["results"]
    assert result["address"] == "api@lucid.example" and result["locale"] == "pl"
    assert result["sent"] == "yes" and result["said"].startswith("250 ")
    [api_message] = smtp_server.to("api@lucid.example")
    assert api_message.parsed()["Subject"] == "[TEST] Nowości w LucidCRM — listopad 2026"
    assert api_message.parsed()["Message-ID"] == result["message_id"]

    # Refused: bad input told in one line, nothing sent, every try audited.
    for fields, status, told in (
        ({"to": "ok@lucid.example\nnot an address"}, 400, "test address 2 is not one mailbox"),
        ({"to": "x@lucid.example\n=?utf-8?q?a=0D=0ABcc:_b@c.d?= <e@f.g>"}, 400, "address 2"),
        ({"to": "Ann\u2028Bcc: b@c.d <x@lucid.example>"}, 400, "address 1 contains a line"),
        ({"to": "\n".join(f"t{n}@lucid.example" for n in range(11))}, 400, "at most 10"),
        ({"to": ""}, 400, "no test address given"),
        ({"to": "x@lucid.example", "locale": "de"}, 400, "locale: one of pl, en"),
        ({"to": "x@lucid.example", "job": "{not json"}, 400, "body is not JSON"),
    ):
        async with http.post(
            console.url + "/preview/test",
            data={"csrf": csrf, "job": json.dumps(job), "locale": "", **fields},
            headers=console.origin,
        ) as response:
            assert response.status == status
            page = await response.text()
        assert told in page, (told, re.findall(r'class="error"[^<]*', page))
    assert len(smtp_server.received) == 3
    failed = await db.fetchval(
        "SELECT count(*) FROM console_audit WHERE action = 'test send' AND result = 'failed'"
    )
    assert failed == 7

    viewer = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with viewer:
        viewer_csrf = await log_in(viewer, console, "victor")
        async with viewer.post(
            console.url + "/preview/test",
            data={"csrf": viewer_csrf, "job": json.dumps(job), "to": "v@lucid.example"},
            headers=console.origin,
        ) as response:
            assert response.status == 403
    assert len(smtp_server.received) == 3
    refused = await db.fetchval(
        "SELECT count(*) FROM console_audit WHERE action = 'test send' AND result = 'refused'"
        " AND operator = 'victor'"
    )
    assert refused == 1
    everything = "\n".join(
        r["detail"] or "" for r in await db.fetch("SELECT detail FROM console_audit")
    )
    assert "@lucid.example" not in everything  # the audit log masks every address


async def test_an_issue_job_file_uploaded_is_previewed_and_a_non_utf8_one_told(
    console: Console, http: aiohttp.ClientSession, smtp_server: SmtpServer
) -> None:
    csrf = await log_in(http, console, "victor")
    job = issue(subject={"pl": "Z pliku: zażółć", "en": "From a file"})
    for content, status, told in (
        (json.dumps(job, ensure_ascii=False).encode(), 200, "Z pliku: zażółć"),
        (json.dumps(job, ensure_ascii=False).encode("cp1250"), 400, "is not UTF-8 text (byte"),
        (b" " * (201 * 1024), 400, "the file is over 200 KiB"),
    ):
        form = aiohttp.FormData()
        form.add_field("csrf", csrf)
        form.add_field("job", "")
        form.add_field("file", content, filename="issue.json", content_type="application/json")
        async with http.post(console.url + "/preview", data=form, headers=console.origin) as r:
            assert r.status == status
            page = await r.text()
        assert told in page, re.findall(r'class="error"[^<]*', page)
        assert ("<iframe sandbox" in page) is (status == 200)
    assert smtp_server.received == []
