"""The console in a real browser: Debian's Chromium driven by Playwright, against a running
mailer with the real services. Screenshots go to artifacts/screenshots/ (not committed)."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import asyncpg
import pytest
from playwright.async_api import BrowserContext, Page, async_playwright, expect

from mailer.adapters.broker import Broker
from tests.conftest import ROOT
from tests.support.jobs import encode, receipt
from tests.support.newsletters import issue, people, subscribe, until_state
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually
from tests.web.console.conftest import PASSWORD, Console

CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "artifacts" / "screenshots"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    if shutil.which(CHROMIUM) is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (scripts/test installs it)")
        pytest.skip("chromium is not installed")
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            args=FLAGS,
            headless=True,
        )
        yield context
        await context.close()


async def log_in(browser: BrowserContext, console: Console, name: str) -> Page:
    page = await browser.new_page()
    await page.goto(console.url + "/")
    await expect(page).to_have_url(console.url + "/login")
    await page.fill("input[name=name]", name)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await expect(page.locator("h1")).to_have_text("Overview")
    return page


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def test_log_in_watch_progress_pause_and_stop(
    console: Console,
    browser: BrowserContext,
    database_url: str,
    db: asyncpg.Connection,
    portal: Broker,
    smtp_server: SmtpServer,
) -> None:
    # 1,200 people at 40 a second: 30 s of sending, more than logging in and looking take.
    await subscribe(database_url, people(1200))
    job = issue()
    await portal.publish(encode(job), routing_key="newsletter")
    await portal.publish(encode(receipt()), routing_key="receipt")
    await until_state(db, job["id"], "sending")
    page = await log_in(browser, console, "alice")
    await expect(page.get_by_role("cell", name="mailer.dead", exact=True)).to_be_visible()
    await expect(page.locator("#parked")).to_contain_text("Parked jobs: 0")
    await expect(page.locator("svg.chart")).to_be_visible()
    await shot(page, "overview")

    await page.click(f"a[href='/issues/{job['id']}']")
    bar = page.locator("progress.issue-progress")
    first = int(await bar.get_attribute("value") or 0)

    async def moved() -> int | None:  # the page refreshes itself: no reload here
        value = int(await bar.get_attribute("value") or 0)
        return value if value > first else None

    await eventually(moved, timeout=20, interval=0.5)
    await shot(page, "issue-sending")

    await page.click("button:has-text('Pause…')")
    await expect(page.locator(".question")).to_contain_text("Pause issue")
    await page.click("button:has-text('Yes, pause')")
    await expect(page.locator("#issue-state")).to_have_text("paused")
    await until_state(db, job["id"], "paused")
    await asyncio.sleep(1.5)  # chunks in hand finish
    settled = len(smtp_server.received)
    await asyncio.sleep(3)
    assert len(smtp_server.received) == settled  # sending stopped
    assert settled < 1201
    await shot(page, "issue-paused")
    await page.goto(console.url + "/audit")
    await expect(page.locator("td", has_text="issue pause").first).to_be_visible()


async def test_requeue_a_parked_job_and_see_it_delivered(
    console: Console, browser: BrowserContext, portal: Broker, smtp_server: SmtpServer
) -> None:
    good = receipt()
    channel = await portal.open_channel()
    await channel.default_exchange.publish(
        aio_pika.Message(
            encode(good),
            message_id=good["id"],
            headers={"x-mailer-origin-queue": "mailer.receipts", "x-mailer-reason": "test"},
        ),
        routing_key="mailer.dead",
    )
    await channel.close()
    page = await log_in(browser, console, "alice")
    await page.goto(console.url + "/dead")
    await expect(page.locator("td", has_text=good["id"])).to_be_visible()
    await shot(page, "dead-letters")
    await page.check("input[name=ref]")
    await page.click("button:has-text('Requeue selected…')")
    await page.click("button:has-text('Yes, requeue')")
    await expect(page.locator("#summary")).to_contain_text("1 requeued")

    async def delivered() -> int:
        return len(smtp_server.to(good["to"]["email"]))

    assert await eventually(delivered, timeout=30) == 1
    await page.goto(console.url + "/dead")
    await expect(page.locator("td", has_text="nothing parked")).to_be_visible()


async def test_a_viewer_is_refused_an_action_and_logged_out_access_is_refused(
    console: Console, browser: BrowserContext, db: asyncpg.Connection, portal: Broker
) -> None:
    blank = await browser.new_page()
    response = await blank.goto(console.url + "/api/overview")
    assert response is not None and response.status == 401
    await blank.goto(console.url + "/issues")
    await expect(blank).to_have_url(console.url + "/login")

    job = issue(send_at="2099-01-01T00:00:00+00:00")
    await portal.publish(encode(job), routing_key="newsletter")
    await until_state(db, job["id"], "scheduled")
    page = await log_in(browser, console, "victor")
    await page.goto(f"{console.url}/issues/{job['id']}")
    await expect(page.locator("#issue-state")).to_have_text("scheduled")
    assert await page.locator("button:has-text('Pause…')").count() == 0  # not offered
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    # the viewer's browser posting the form anyway
    refused = await page.request.post(
        f"{console.url}/issues/{job['id']}/pause",
        form={"csrf": csrf or "", "confirm": "yes"},
        headers={"Origin": console.url},
    )
    assert refused.status == 403
    assert (
        await db.fetchval("SELECT state FROM issues WHERE id = $1", uuid.UUID(job["id"]))
        == "scheduled"
    )


async def test_a_cross_site_post_is_refused(
    console: Console,
    browser: BrowserContext,
    db: asyncpg.Connection,
    portal: Broker,
    tmp_path: Path,
) -> None:
    job = issue(send_at="2099-01-01T00:00:00+00:00")
    await portal.publish(encode(job), routing_key="newsletter")
    await until_state(db, job["id"], "scheduled")
    page = await log_in(browser, console, "alice")
    # another site, in the same browser, with a form aimed at the console
    evil = tmp_path / "evil.html"
    evil.write_text(
        f'<form id="f" method="post" action="{console.url}/issues/{job["id"]}/cancel">'
        '<input name="confirm" value="yes"><input name="csrf" value="guess"></form>'
        '<script>document.getElementById("f").submit()</script>'
    )
    attacker = await browser.new_page()
    await attacker.goto(evil.as_uri())
    await attacker.wait_for_load_state()
    await asyncio.sleep(1)
    body = await attacker.content()
    assert "cancelled" not in body
    assert (
        await db.fetchval("SELECT state FROM issues WHERE id = $1", uuid.UUID(job["id"]))
        == "scheduled"
    )
    await page.goto(console.url + "/audit")
    await shot(page, "audit")


def test_chromium_is_debians() -> None:
    """The smoke check that Playwright still drives the Chromium the scripts install."""
    if shutil.which("chromium") is None and os.environ.get("CI") != "true":
        pytest.skip("chromium is not installed")
    assert Path(CHROMIUM).exists()


async def test_preview_an_issue_then_send_a_test_of_it(
    console: Console, browser: BrowserContext, db: asyncpg.Connection, smtp_server: SmtpServer
) -> None:
    job = issue(subject={"pl": "Nowości — test", "en": "News — a test"})
    page = await log_in(browser, console, "alice")
    await page.goto(console.url + "/preview")
    await page.fill("textarea[name=job]", encode(job).decode())
    await page.click("button:has-text('Preview')")
    await expect(page.locator("section.preview h2").first).to_contain_text("Nowości — test")
    frame = page.frame_locator("iframe[title='HTML, pl']")
    await expect(frame.locator("body")).to_contain_text("Przeciągnij i upuść")

    await page.fill("textarea[name=to]", "Tester <qa@lucid.example>")
    await page.select_option("select[name=locale]", "en")
    await page.click("button:has-text('Send the test')")
    await expect(page.locator(".test-result [role=status]")).to_contain_text(
        "1 of 1 test message(s) sent"
    )
    await shot(page, "preview-test-sent")
    [message] = smtp_server.to("qa@lucid.example")
    assert message.parsed()["Subject"] == "[TEST] News — a test"
    assert await db.fetchval("SELECT count(*) FROM deliveries") == 0


async def test_the_login_form_lines_its_fields_up(
    console: Console, browser: BrowserContext
) -> None:
    """Each field starts where the other does and is as wide, whatever its label's length,
    and the button sits under them; the page's icon is ours (no 404). Screenshot: login."""
    page = await browser.new_page()
    icons: list[int] = []
    page.on(
        "response", lambda r: icons.append(r.status) if r.url.endswith("/favicon.ico") else None
    )
    await page.goto(console.url + "/login")
    name = await page.locator("input[name=name]").bounding_box()
    password = await page.locator("input[name=password]").bounding_box()
    button = await page.locator("button[type=submit]").bounding_box()
    await shot(page, "login")
    assert name is not None and password is not None and button is not None
    assert abs(name["x"] - password["x"]) < 1, f"fields start {name['x']} and {password['x']} px in"
    assert abs(name["width"] - password["width"]) < 1, (name, password)
    assert abs(button["x"] - name["x"]) < 1, (button, name)
    assert button["y"] > password["y"] + password["height"]
    response = await page.request.get(console.url + "/favicon.ico")
    assert response.status == 200 and response.headers["content-type"] == "image/vnd.microsoft.icon"
    assert 404 not in icons
