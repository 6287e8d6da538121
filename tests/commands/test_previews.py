"""`mailer issue preview` shows what a subscriber gets; `mailer issue test` sends it, marked,
through the real relay path to test addresses only, and records nothing."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import dkim

from mailer.adapters.broker import Broker
from tests.conftest import DkimKeys, StartService
from tests.support.http import base_url
from tests.support.jobs import encode
from tests.support.newsletters import issue, subscribe, until_state
from tests.support.processes import amailer, environment, mailer
from tests.support.smtp import Received, SmtpServer
from tests.support.waiting import eventually

PUBLIC_URL = "https://mail.lucid.example"


def trial_url(locale: str) -> str:
    """A test message's unsubscribe link: no token, and the message's locale."""
    return f"{PUBLIC_URL}/u/test-message-no-unsubscribe.{locale}"


def localized() -> dict[str, Any]:
    def article(title: str, body: str) -> dict[str, str]:
        return {"title": title, "body_html": f"<p>{body}</p>", "url": "https://lucid.example/b"}

    return issue(
        data={
            "preheader": "LucidCRM 5.0",
            "articles": [
                {
                    "pl": article("Nowy cennik", "Od stycznia."),
                    "en": article("New prices", "From January."),
                }
            ],
        }
    )


def parts(message: Received) -> tuple[str, str, str]:
    parsed = message.parsed()
    html, text = parsed.get_body(("html",)), parsed.get_body(("plain",))
    assert html is not None and text is not None
    return str(parsed["Subject"]), html.get_content(), text.get_content()


async def test_preview_is_what_a_subscriber_receives(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
    tmp_path: Path,
) -> None:
    job = localized()
    job_file = tmp_path / "issue.json"
    job_file.write_bytes(encode(job))
    out = tmp_path / "preview"
    env = environment(config)
    for locale, name in (("pl", "Anna Nowak"), ("en", "John Smith")):
        shown = await amailer(
            "issue",
            "preview",
            str(job_file),
            "--locale",
            locale,
            "--name",
            name,
            "--out",
            str(out),
            env=env,
        )
        assert shown.returncode == 0, shown.stderr
        subject = job["subject"][locale]
        assert shown.stdout.splitlines() == [
            f"{locale}: {subject}",
            f"  {out}/{job['id']}.{locale}.html",
            f"  {out}/{job['id']}.{locale}.txt",
        ]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{job['id']}.{locale}.{ext}" for locale in ("pl", "en") for ext in ("html", "txt")
    )

    await subscribe(
        database_url,
        [("anna@example.pl", "Anna Nowak", "pl"), ("john@example.com", "John Smith", "en")],
    )
    await start_service(config)
    await portal.publish(encode(job), routing_key="newsletter")
    await until_state(db, job["id"], "done")
    for message in smtp_server.received:
        locale = "pl" if message.rcpt_tos[0].endswith(".pl") else "en"
        found = re.search(rb"List-Unsubscribe: <([^>]+)>", message.data)
        assert found is not None
        real_url = found[1].decode()
        subject, html, text = parts(message)
        preview_html = (out / f"{job['id']}.{locale}.html").read_text()
        preview_text = (out / f"{job['id']}.{locale}.txt").read_text()
        assert subject == job["subject"][locale]
        url = trial_url(locale)
        assert url in preview_html and url in preview_text
        # the same lines (the message's parts travel with CRLF line ends)
        assert preview_html.replace(url, real_url).splitlines() == html.splitlines()
        assert preview_text.replace(url, real_url).splitlines() == text.splitlines()
    assert "New prices" in (out / f"{job['id']}.en.txt").read_text()
    assert "Nowy cennik" not in (out / f"{job['id']}.en.txt").read_text()


def test_preview_of_a_job_that_is_not_an_issue_is_one_line(
    config: dict[str, Any], tmp_path: Path
) -> None:
    env = environment(config)
    job_file = tmp_path / "issue.json"
    out = tmp_path / "preview"
    bad_link = issue(
        data={"articles": [{"title": "x", "body_html": "<p>x</p>", "url": "javascript:alert(1)"}]}
    )
    for body, reason in (
        (b"{not json", "body is not JSON"),
        (encode({"kind": "receipt"}), "version: receipt jobs of version None are not supported"),
        (encode(bad_link), "template newsletter/pl: link 'javascript:alert(1)' must be an"),
        (
            encode(issue(subject={"en": "Only English"})),
            "subject: needs the list's default locale 'pl'",
        ),
    ):
        job_file.write_bytes(body)
        result = mailer("issue", "preview", str(job_file), "--out", str(out), env=env)
        assert result.returncode == 1
        assert result.stderr.startswith(f"mailer: {job_file}: not a valid issue: {reason}")
        assert len(result.stderr.splitlines()) == 1
    assert not out.exists() or list(out.iterdir()) == []


async def test_a_test_send_is_marked_signed_and_recorded_nowhere(
    config: dict[str, Any],
    start_service: StartService,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
    dkim_keys: DkimKeys,
    tmp_path: Path,
) -> None:
    ids = await subscribe(database_url, [("anna@example.pl", "Anna Nowak", "pl")])
    job = localized()
    job_file = tmp_path / "issue.json"
    job_file.write_bytes(encode(job))
    env = environment(config)
    result = await asyncio.to_thread(
        mailer,
        "issue",
        "test",
        str(job_file),
        "--to",
        "qa@lucid.example",
        "Jan Tester <jan@lucid.example>",
        "--locale",
        "en",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("qa@lucid.example (en): sent (250 ")
    assert lines[1].startswith("jan@lucid.example (en): sent (250 ")
    assert (
        lines[2]
        == f"2 of 2 test message(s) sent via smtp://127.0.0.1:{smtp_server.port} (plain text)"
    )

    received = sorted(smtp_server.received, key=lambda r: r.rcpt_tos[0])
    assert [r.rcpt_tos for r in received] == [("jan@lucid.example",), ("qa@lucid.example",)]
    for message in received:
        assert dkim.DKIM(message.data).verify(dnsfunc=dkim_keys.dns)
        parsed = message.parsed()
        assert parsed["Subject"] == "[TEST] What's new in LucidCRM — November 2026"
        assert parsed["X-Mailer-Test"] == job["id"]
        assert parsed["List-Unsubscribe"] == f"<{trial_url('en')}>"
        assert parsed["Message-ID"].startswith(f"<test.{job['id']}.")
        _, html, text = parts(message)
        assert "New prices" in text and "Nowy cennik" not in text
        assert trial_url("en") in html and trial_url("en") in text
    assert "Hi Jan Tester," in parts(received[0])[2]
    assert received[0].parsed()["Message-ID"] != received[1].parsed()["Message-ID"]
    # Nothing recorded: no issue, no delivery; the subscriber on the list got nothing.
    assert await db.fetchval("SELECT count(*) FROM deliveries") == 0
    assert await db.fetchval("SELECT count(*) FROM issues") == 0

    # The test message's unsubscribe link changes nobody, and says so in the message's
    # language (English here) whatever the reader's browser asks for, or if it asks nothing.
    service = await start_service(config)
    local = trial_url("en").replace(PUBLIC_URL, base_url(service))
    async with aiohttp.ClientSession(skip_auto_headers=["Accept-Language"]) as session:
        async with session.post(local, data={"List-Unsubscribe": "One-Click"}) as response:
            assert response.status == 400
        for asked in ({}, {"Accept-Language": "pl-PL,pl;q=0.9"}, {"Accept-Language": "de"}):
            async with session.get(local, headers=asked) as response:
                assert response.status == 200
                page = await response.text()
            assert '<html lang="en">' in page, asked
            assert "<h1>Test message</h1>" in page, asked
            assert "its unsubscribe link unsubscribes nobody, so nothing was changed" in page
            assert "Nieprawidłowy" not in page
    status = await db.fetchval(
        "SELECT status FROM subscriptions WHERE subscriber_id = $1", ids["anna@example.pl"]
    )
    assert status == "subscribed"


async def test_a_test_send_that_fails_says_so(
    config: dict[str, Any], smtp_server: SmtpServer, tmp_path: Path
) -> None:
    job_file = tmp_path / "issue.json"
    job_file.write_bytes(encode(issue()))
    smtp_server.rcpt_replies["bounce@lucid.example"] = "550 5.1.1 No such user"
    env = environment(config)
    result = await asyncio.to_thread(
        mailer,
        "issue",
        "test",
        str(job_file),
        "--to",
        "ok@lucid.example",
        "bounce@lucid.example",
        env=env,
    )
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ok@lucid.example (pl): sent (250")
    assert lines[1].startswith("bounce@lucid.example (pl): NOT sent: ")
    assert "550" in lines[1]
    assert lines[2].startswith("1 of 2 test message(s) sent via ")
    assert [r.rcpt_tos[0] for r in smtp_server.received] == ["ok@lucid.example"]

    for hostile in (
        "not an address",
        "=?utf-8?q?QA=0D=0ABcc:_victim@example.com?= <qa@lucid.example>",
        "QA\u2028Bcc: victim@example.com <qa@lucid.example>",
        "qa@lucid.example, victim@example.com",
    ):
        bad = await asyncio.to_thread(
            mailer, "issue", "test", str(job_file), "--to", hostile, env=env
        )
        assert bad.returncode == 2, hostile
        assert bad.stderr.startswith("mailer: --to: ")
        assert len(bad.stderr.splitlines()) == 1
    many = await asyncio.to_thread(
        mailer,
        "issue",
        "test",
        str(job_file),
        "--to",
        *[f"t{n}@lucid.example" for n in range(11)],
        env=env,
    )
    assert many.returncode == 2
    assert many.stderr == "mailer: --to: at most 10 test addresses at a time\n"
    env["MAILER_SMTP_URL"] = "smtp://127.0.0.1:1?tls=none"
    down = await asyncio.to_thread(
        mailer, "issue", "test", str(job_file), "--to", "ok@lucid.example", env=env
    )
    assert down.returncode == 1
    assert down.stdout.splitlines()[0].startswith("ok@lucid.example (pl): NOT sent: ")

    async def only_one() -> bool:
        return len(smtp_server.received) == 1

    await eventually(only_one)
