"""Who gets into the console, over HTTP: sessions, roles, CSRF, Origin, paced logins."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import aiohttp
import asyncpg

from mailer.adapters.broker import Broker
from mailer.core.passwords import hash_password, verify_password
from tests.conftest import StartService
from tests.support.http import admin_url, base_url
from tests.web.console.conftest import PASSWORD, Console, add_operators, log_in


async def test_logged_out_requests_are_refused(
    console: Console, http: aiohttp.ClientSession
) -> None:
    async with http.get(console.url + "/", allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/login"
    for path in ("/api/overview", "/api/issues", "/api/dead", "/api/audit"):
        async with http.get(console.url + path) as response:
            assert response.status == 401, path
    issue = uuid.uuid4()
    async with http.post(
        f"{console.url}/api/issues/{issue}/pause", headers=console.origin, json={}
    ) as response:
        assert response.status == 401
    async with http.get(console.url + "/login") as response:
        assert response.status == 200
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert 'name="password"' in await response.text()


async def test_the_public_listener_serves_no_console(
    console: Console, http: aiohttp.ClientSession
) -> None:
    for path in ("/", "/login", "/metrics", "/api/overview"):
        async with http.get(base_url(console.service) + path) as response:
            assert response.status == 404, path
    async with http.get(console.url + "/metrics") as response:
        assert response.status == 200
        assert "mailer_deliveries_total" in await response.text()


async def test_a_login_makes_a_strict_http_only_session_and_audits_it(
    console: Console, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    async with http.post(
        console.url + "/login",
        data={"name": "alice", "password": PASSWORD},
        headers=console.origin,
        allow_redirects=False,
    ) as response:
        assert response.status == 303
        cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # served over plain http here
    token = cookie.split(";")[0].split("=", 1)[1]
    hashed = hashlib.sha256(token.encode()).digest()
    rows = await db.fetch("SELECT token_hash FROM console_sessions")
    assert [r["token_hash"] for r in rows] == [hashed]  # only a hash of the cookie is kept
    async with http.get(console.url + "/api/overview") as response:
        assert response.status == 200
        body = await response.json()
    names = [q["queue"] for q in body["queues"]]
    assert names[:3] == ["mailer.receipts", "mailer.newsletters", "mailer.subscriptions"]
    assert "mailer.dead" in names
    assert any(name.startswith("mailer.delay.") for name in names)
    assert all(q["consumers"] == 1 for q in body["queues"][:2])
    assert body["measured_at"]
    row = await db.fetchrow("SELECT operator, action, result FROM console_audit")
    assert dict(row) == {"operator": "alice", "action": "login", "result": "done"}


async def test_logins_are_rate_limited_per_account(
    console: Console, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    statuses = []
    for _ in range(4):
        async with http.post(
            console.url + "/login",
            data={"name": "alice", "password": "wrong password!!"},
            headers=console.origin,
        ) as response:
            statuses.append(response.status)
    assert statuses == [401, 401, 401, 429]  # [admin] login_attempts = 3
    async with http.post(
        console.url + "/login",
        data={"name": "alice", "password": PASSWORD},
        headers=console.origin,
        allow_redirects=False,
    ) as response:
        assert response.status == 429  # even the right password, until the window moves
    results = await db.fetch("SELECT result FROM console_audit ORDER BY id")
    assert [r["result"] for r in results] == ["refused"] * 3 + ["limited"] * 2


async def test_cross_site_and_tokenless_posts_are_refused(
    console: Console, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    csrf = await log_in(http, console, "alice")
    issue = str(uuid.uuid4())
    async with http.post(
        f"{console.url}/api/issues/{issue}/pause",
        headers={"Origin": "https://evil.example", "X-CSRF-Token": csrf},
    ) as response:
        assert response.status == 403
    async with http.post(
        f"{console.url}/api/issues/{issue}/pause", headers=console.origin
    ) as response:
        assert response.status == 403  # no CSRF token
    async with http.post(
        f"{console.url}/issues/{issue}/pause",
        data={"csrf": "forged", "confirm": "yes"},
        headers=console.origin,
    ) as response:
        assert response.status == 403
    async with http.post(
        console.url + "/login",
        data={"name": "alice", "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    ) as response:
        assert response.status == 403  # no login from another site either
    refused = await db.fetch(
        "SELECT detail FROM console_audit WHERE result = 'refused' ORDER BY id"
    )
    assert [r["detail"] for r in refused] == [
        "cross-site request",
        "missing or wrong CSRF token",
        "missing or wrong CSRF token",
    ]


async def test_a_new_password_ends_sessions_and_hashes_are_argon2(
    console: Console, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    await log_in(http, console, "alice")
    stored = await db.fetchval("SELECT password_hash FROM operators WHERE name = 'alice'")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, PASSWORD)
    assert not verify_password(stored, PASSWORD + "x")
    assert not verify_password(None, PASSWORD)
    await db.execute(
        "UPDATE operators SET password_hash = $1 WHERE name = 'alice'",
        hash_password("another one!!"),
    )
    await db.execute("DELETE FROM console_sessions")  # what `mailer operator passwd` does
    async with http.get(console.url + "/api/overview") as response:
        assert response.status == 401


async def test_the_console_of_mailer_web_alone_reads_the_broker_itself(
    config: dict[str, Any],
    start_service: StartService,
    database_url: str,
    portal: Broker,
    http: aiohttp.ClientSession,
) -> None:
    await add_operators(database_url)
    await portal.declare([200])
    service = await start_service(config, run_worker=False)
    console = Console(service, admin_url(service))
    await log_in(http, console, "victor")
    async with http.get(console.url + "/api/overview") as response:
        body = await response.json()
    depths = {q["queue"]: q for q in body["queues"]}
    assert depths["mailer.receipts"]["ready"] == 0
    assert depths["mailer.receipts"]["consumers"] == 0  # no worker anywhere
    assert depths["mailer.receipts"]["unacked"] == 0  # none held by a live worker
    assert depths["mailer.delay.400ms"]["ready"] is None  # not declared: said, not guessed
    assert depths["mailer.delay.400ms"]["unacked"] is None
    assert depths["mailer.dead"]["ready"] == 0  # asked again on a new channel after that
    assert body["worker"] is None
    async with http.get(console.url + "/") as response:
        assert "not running in this process" in await response.text()


async def test_logging_out_ends_the_session(
    console: Console, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    csrf = await log_in(http, console, "victor")
    async with http.post(
        console.url + "/logout", data={"csrf": csrf}, headers=console.origin, allow_redirects=False
    ) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/login"
    assert await db.fetchval("SELECT count(*) FROM console_sessions") == 0
    async with http.get(console.url + "/api/overview") as response:
        assert response.status == 401
    actions = await db.fetch("SELECT action FROM console_audit ORDER BY id")
    assert [r["action"] for r in actions] == ["login", "logout"]


async def test_a_viewer_asking_for_a_confirmation_page_is_refused_and_audited(
    console: Console, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    csrf = await log_in(http, console, "victor")
    issue = str(uuid.uuid4())
    asked = {
        f"/issues/{issue}/pause": {"csrf": csrf},
        "/suppressions/add": {"csrf": csrf, "address": "jan@example.pl", "reason": "manual"},
        "/dead/purge": {"csrf": csrf, "all": "yes"},
    }
    for path, form in asked.items():
        async with http.post(console.url + path, data=form, headers=console.origin) as response:
            assert response.status == 403, path
            assert "viewers may look, not act" in await response.text()
    rows = await db.fetch(
        "SELECT operator, action, target, result, detail, source FROM console_audit"
        " WHERE action <> 'login' ORDER BY id"
    )
    assert [dict(r) for r in rows] == [
        {
            "operator": "victor",
            "action": "issue pause",
            "target": issue,
            "result": "refused",
            "detail": "viewer",
            "source": "127.0.0.1",
        },
        {
            "operator": "victor",
            "action": "suppression add",
            "target": rows[1]["target"],
            "result": "refused",
            "detail": "viewer",
            "source": "127.0.0.1",
        },
        {
            "operator": "victor",
            "action": "dead purge",
            "target": "all",
            "result": "refused",
            "detail": "viewer",
            "source": "127.0.0.1",
        },
    ]
    assert rows[1]["target"] and "jan" not in rows[1]["target"]  # the address by its reference
