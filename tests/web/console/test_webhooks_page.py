"""The Webhooks page in a real browser (Debian's Chromium, Playwright) against a running
mailer whose worker delivers to a real HTTPS receiver: an endpoint failing, then disabled,
enabled, delivered to and replayed by an operator; a viewer sees it and changes nothing.
Screenshots: artifacts/screenshots/webhooks-*.png."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from playwright.async_api import BrowserContext, expect

from mailer.adapters.webhooks import WebhookEndpoints, sealing_keys
from mailer.config import build_settings
from tests.support.tls import Pki
from tests.support.waiting import eventually
from tests.support.webhooks import Receiver, publish_events, receiver, webhook_pki, webhooks_section
from tests.web.console.conftest import Console, StartConsole
from tests.web.console.test_browser import browser, log_in, shot

__all__ = ["browser", "receiver", "webhook_pki"]  # fixtures


async def test_an_operator_watches_disables_enables_and_replays_an_endpoint(
    config: dict[str, Any],
    start_console: StartConsole,
    browser: BrowserContext,
    receiver: Receiver,
    webhook_pki: Pki,
    database_url: str,
    db: asyncpg.Connection,
) -> None:
    config["webhooks"] = webhooks_section(webhook_pki)
    console: Console = await start_console()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        endpoints = WebhookEndpoints(pool, sealing_keys(build_settings(config)))
        endpoint, secret = await endpoints.register("default", receiver.url, batch_size=100)
    finally:
        await pool.close()
    receiver.secrets = [secret]
    receiver.answer = 500
    before = datetime.now(UTC) - timedelta(seconds=2)
    ids = await publish_events(database_url, 5)

    page = await log_in(browser, console, "alice")
    await page.click("nav a[href='/webhooks']")
    row = page.locator(f"tr[data-endpoint='{endpoint}']")
    await expect(row.locator(".failure")).to_contain_text("answered 500")
    await expect(row.locator(".state")).to_have_text("failing")
    await expect(row.locator(".backlog")).to_have_text("5")
    await shot(page, "webhooks-failing")

    await row.locator("button:has-text('Disable…')").click()
    await expect(page.locator(".question")).to_contain_text("Disable this endpoint?")
    await page.click("button:has-text('Yes, disable')")
    await expect(page.locator("[role=status]")).to_have_text("disabled")
    await page.goto(console.url + "/webhooks")
    await expect(row.locator(".state")).to_contain_text("disabled (operator)")

    receiver.answer = 200
    await row.locator("button:has-text('Enable…')").click()
    await page.click("button:has-text('Yes, enable')")
    await eventually(lambda: len(receiver.taken()) == 5, timeout=10)
    await page.goto(console.url + "/webhooks")
    await expect(row.locator(".state")).to_have_text("active")
    await expect(row.locator(".backlog")).to_have_text("0")
    await shot(page, "webhooks-delivered")

    await row.locator("input[name=since]").fill(before.strftime("%Y-%m-%dT%H:%M:%S"))
    await row.locator("button:has-text('Replay…')").click()
    await expect(page.locator(".question")).to_contain_text("Deliver again every kept event")
    await page.click("button:has-text('Yes, replay')")
    await expect(page.locator("[role=status]")).to_contain_text("replays from position 1")
    await eventually(lambda: len(receiver.taken()) == 10, timeout=10)
    assert [event["id"] for event in receiver.taken()] == ids + ids

    await browser.clear_cookies()  # alice's session ends; victor logs in
    viewer = await log_in(browser, console, "victor")
    await viewer.goto(console.url + "/webhooks")
    await expect(viewer.locator(f"tr[data-endpoint='{endpoint}'] .state")).to_have_text("active")
    assert await viewer.locator("button:has-text('Disable…')").count() == 0  # not offered
    csrf = await viewer.locator("input[name=csrf]").first.get_attribute("value")
    refused = await viewer.request.post(
        f"{console.url}/webhooks/{endpoint}/disable",
        form={"csrf": csrf or "", "confirm": "yes"},
        headers={"Origin": console.url},
    )
    assert refused.status == 403
    assert await db.fetchval("SELECT state FROM webhook_endpoints") == "active"
    audit = await db.fetch("SELECT operator, action, result FROM console_audit ORDER BY id")
    assert [tuple(r) for r in audit if r["action"].startswith("webhook")] == [
        ("alice", "webhook disable", "done"),
        ("alice", "webhook enable", "done"),
        ("alice", "webhook replay", "done"),
        ("victor", "webhook disable", "refused"),
    ]
