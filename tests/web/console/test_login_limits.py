"""Logins under attack, over HTTP against a running console: concurrent guesses beyond the
limit are refused before any password is checked, the checks themselves are bounded in the
whole process, and the limit counts the client a trusted proxy forwards."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import asyncpg

from tests.conftest import StartService
from tests.support.http import admin_url
from tests.web.console.conftest import PASSWORD, Console, StartConsole

MIB = 1024 * 1024
GUESSES = 300


def rss() -> int:
    """This process's resident memory, bytes (the console runs in it)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@contextmanager
def peak_rss() -> Iterator[list[int]]:
    """[at the start, the highest seen], sampled every 5 ms on a thread of its own (the
    event loop is busy with the very requests measured)."""
    found = [rss(), rss()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            found[1] = max(found[1], rss())

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield found
    finally:
        done.set()
        sampler.join()


async def post_login(
    http: aiohttp.ClientSession,
    console: Console,
    name: str,
    password: str,
    forwarded_for: str | None = None,
) -> int:
    headers = dict(console.origin)
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    async with http.post(
        console.url + "/login",
        data={"name": name, "password": password},
        headers=headers,
        allow_redirects=False,
    ) as response:
        await response.read()
        return response.status


async def test_concurrent_wrong_logins_beyond_the_limit_are_refused_unchecked(
    start_console: StartConsole, db: asyncpg.Connection
) -> None:
    console = await start_console(run_worker=False)  # [admin] login_attempts = 3
    connector = aiohttp.TCPConnector(limit=GUESSES)
    async with aiohttp.ClientSession(connector=connector) as http:
        with peak_rss() as memory:
            started = time.monotonic()
            statuses = await asyncio.gather(
                *(post_login(http, console, "alice", f"guess {n}!") for n in range(GUESSES))
            )
            took = time.monotonic() - started
        counts = collections.Counter(statuses)
        rise = (memory[1] - memory[0]) / MIB
        # Measured: 3 of 401 and 297 of 429 in 1.9 s, RSS +135 MiB (two checks at once).
        # Before: 208 of 401 (the rest 429 only once the first failures were written) in
        # 87 s, RSS +395 MiB.
        assert counts == {401: 3, 429: GUESSES - 3}, (counts, f"RSS +{rise:.0f} MiB")
        assert rise < 200, f"RSS rose {rise:.0f} MiB for {GUESSES} guesses in {took:.1f} s"
        results = collections.Counter(
            r["result"] for r in await db.fetch("SELECT result FROM console_audit")
        )
        assert results == {"refused": 3, "limited": GUESSES - 3}

        assert await post_login(http, console, "alice", PASSWORD) == 429  # until the window moves
        await db.execute(
            "UPDATE console_login_attempts SET at = at - interval '15 minutes 1 second'"
        )
        assert await post_login(http, console, "alice", PASSWORD) == 303
        assert await post_login(http, console, "alice", "one more guess!") == 401


async def test_the_limit_holds_across_processes(
    start_console: StartConsole,
    start_service: StartService,
    config: dict[str, Any],
    db: asyncpg.Connection,
) -> None:
    """Two services on one database, as two `mailer web` would be, take 150 concurrent
    guesses each: the slots are taken in PostgreSQL, so three are checked in all."""
    first = await start_console(run_worker=False)
    second_service = await start_service(config, run_worker=False)
    second = Console(second_service, admin_url(second_service))
    connector = aiohttp.TCPConnector(limit=GUESSES)
    async with aiohttp.ClientSession(connector=connector) as http:
        statuses = await asyncio.gather(
            *(
                post_login(http, console, "alice", f"guess {n}!")
                for n in range(GUESSES // 2)
                for console in (first, second)
            )
        )
    assert collections.Counter(statuses) == {401: 3, 429: GUESSES - 3}
    checked = await db.fetchval("SELECT count(*) FROM console_audit WHERE result = 'refused'")
    assert checked == 3


async def test_password_checks_are_bounded_in_the_process_whatever_the_sources(
    start_console: StartConsole, db: asyncpg.Connection
) -> None:
    """Guesses each from its own source for its own account pass every login limit: what
    bounds them is the process's cap on checks (2 at once, 16 waiting; the rest 503)."""
    console = await start_console(
        run_worker=False, http={"trusted_proxies": ["127.0.0.1/32"]}, admin={"login_attempts": 1}
    )
    sources = [f"198.51.{n // 250}.{n % 250}" for n in range(GUESSES)]
    connector = aiohttp.TCPConnector(limit=GUESSES)
    async with aiohttp.ClientSession(connector=connector) as http:
        with peak_rss() as memory:
            statuses = await asyncio.gather(
                *(
                    post_login(http, console, f"user{n}", "a guess!!", sources[n])
                    for n in range(GUESSES)
                )
            )
        counts = collections.Counter(statuses)
        rise = (memory[1] - memory[0]) / MIB
        # Measured: 30 of 401, 270 of 503, RSS +130 MiB. Before: no cap, RSS +386 MiB.
        assert set(counts) <= {401, 503} and counts[401] >= 18, (counts, f"RSS +{rise:.0f} MiB")
        assert rise < 200, f"RSS rose {rise:.0f} MiB; 401/503: {counts[401]}/{counts[503]}"
        refused = await db.fetchval("SELECT count(*) FROM console_audit WHERE result = 'refused'")
        assert refused == counts[401]
        # a refusal for being busy took no slot: the same source may try again at once
        busy = sources[statuses.index(503)]
        assert await post_login(http, console, "alice", PASSWORD, busy) == 303


async def test_clients_behind_a_trusted_proxy_are_limited_each_by_its_own_address(
    start_console: StartConsole, db: asyncpg.Connection
) -> None:
    console = await start_console(run_worker=False, http={"trusted_proxies": ["127.0.0.1/32"]})
    async with aiohttp.ClientSession() as http:
        # one client tries names until its source is limited (3 per source)
        first = [
            await post_login(http, console, f"name{n}", "nope!!", "203.0.113.7") for n in range(4)
        ]
        assert first == [401, 401, 401, 429]
        # another behind the same proxy is not
        assert await post_login(http, console, "other", "nope!!", "203.0.113.8") == 401
        assert await post_login(http, console, "alice", PASSWORD, "203.0.113.8") == 303
        # the left-most address is the client's to write: only the proxy's own hop counts
        forged = "203.0.113.99, 203.0.113.7"
        assert await post_login(http, console, "alice", PASSWORD, forged) == 429
    sources = await db.fetch("SELECT DISTINCT source FROM console_audit ORDER BY source")
    assert [r["source"] for r in sources] == ["203.0.113.7", "203.0.113.8"]


async def test_an_untrusted_peers_forwarded_for_is_ignored(
    console: Console, db: asyncpg.Connection
) -> None:
    async with aiohttp.ClientSession() as http:
        statuses = [
            await post_login(http, console, f"name{n}", "nope!!", f"203.0.113.{n}")
            for n in range(4)
        ]
    assert statuses == [401, 401, 401, 429]  # one source: the peer, whatever it claims
    sources = await db.fetch("SELECT DISTINCT source FROM console_audit")
    assert [r["source"] for r in sources] == ["127.0.0.1"]
