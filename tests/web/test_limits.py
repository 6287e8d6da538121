"""The bad-link limiter: who a source is, and what a flood of sources costs.

Over real HTTP, `X-Forwarded-For` stands in for the clients behind a proxy: the test client
connects from 127.0.0.1, which each test trusts as its proxy or not.
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from mailer.config import build_settings, load_settings
from mailer.errors import ConfigError
from mailer.parts.web import PublicWeb
from mailer.service import Service
from mailer.web.limits import ClientAddresses, InvalidAttempts, source_of
from tests.support.http import base_url
from tests.web.conftest import StartWeb, link, status

LIMIT = 3


async def bad_link(http: aiohttp.ClientSession, web: Service, client: str | None) -> int:
    headers = {"X-Forwarded-For": client} if client else {}
    async with http.get(f"{base_url(web)}/u/{'A' * 28}", headers=headers) as response:
        await response.read()
        return response.status


async def test_behind_a_trusted_proxy_each_client_has_its_own_limit(
    start_web: StartWeb, http: aiohttp.ClientSession
) -> None:
    """Behind a trusted proxy each client (the right-most untrusted hop) has its own limit:
    one guesser's 429 is not everyone's."""
    web = await start_web(invalid_token_limit=LIMIT, trusted_proxies=["127.0.0.1/32"])
    guesser = [await bad_link(http, web, "198.51.100.7") for _ in range(LIMIT + 2)]
    assert guesser == [400] * LIMIT + [429] * 2
    assert await bad_link(http, web, "198.51.100.8") == 400  # someone else behind the proxy
    # The client writes the left part of the header; the right-most untrusted hop is it.
    assert await bad_link(http, web, "203.0.113.9, 198.51.100.7") == 429
    assert await bad_link(http, web, "198.51.100.7, 127.0.0.1") == 429  # another hop of ours


async def test_an_untrusted_peer_cannot_pick_its_source(
    start_web: StartWeb, http: aiohttp.ClientSession
) -> None:
    web = await start_web(invalid_token_limit=LIMIT)  # no trusted proxies
    statuses = [await bad_link(http, web, f"198.51.100.{n}") for n in range(LIMIT + 2)]
    assert statuses == [400] * LIMIT + [429] * 2


async def test_ipv6_is_limited_by_its_64(start_web: StartWeb, http: aiohttp.ClientSession) -> None:
    """An IPv6 host is limited by its /64: its 2^64 addresses share one limit."""
    web = await start_web(invalid_token_limit=LIMIT, trusted_proxies=["127.0.0.1"])
    statuses = [await bad_link(http, web, f"2001:db8:1:2::{n:x}") for n in range(LIMIT + 2)]
    assert statuses == [400] * LIMIT + [429] * 2
    assert await bad_link(http, web, "2001:db8:1:2:ffff:ffff:ffff:ffff") == 429
    assert await bad_link(http, web, "2001:db8:1:3::1") == 400  # the next /64


async def test_a_flood_of_sources_stays_bounded_and_the_pages_keep_serving(
    start_web: StartWeb, db: asyncpg.Connection
) -> None:
    """2,000 distinct sources against a table of 200: at most 200 remembered; meanwhile
    /healthz and a valid link answer, and every bad link gets 400 (none errs)."""
    web = await start_web(
        invalid_token_limit=LIMIT, trusted_proxies=["127.0.0.1"], limited_sources=200
    )
    connector = aiohttp.TCPConnector(limit=20)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def flood(first: int) -> list[int]:
            return [
                await bad_link(http, web, str(ipaddress.ip_address("2001:db8::") + (n << 64)))
                for n in range(first, 2000, 10)
            ]

        flooding = asyncio.gather(*(flood(first) for first in range(10)))
        served = []
        while not flooding.done():
            async with http.get(base_url(web) + "/healthz") as response:
                served.append(response.status)
            await asyncio.sleep(0.05)
        statuses = [s for batch in await flooding for s in batch]
        async with http.post(await link(db, web), data={"List-Unsubscribe": "One-Click"}) as r:
            assert r.status == 200
    assert statuses == [400] * 2000
    assert served and set(served) == {200}
    assert await status(db) == "unsubscribed"
    pages = web.part(PublicWeb).server._pages
    assert pages is not None and len(pages._attempts) == 200


# The pure parts, with a clock of our own -------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_refills_over_the_window() -> None:
    clock = Clock()
    attempts = InvalidAttempts(3, window=60, clock=clock)
    source = source_of(ipaddress.ip_address("192.0.2.1"))
    assert [attempts.refused(source) for _ in range(4)] == [None, None, None, 20]
    clock.now += 19
    assert attempts.refused(source) == 1  # a refused attempt costs nothing: one second to go
    clock.now += 1
    assert attempts.refused(source) is None
    assert attempts.refused(source) == 20


def test_the_table_forgets_the_source_unseen_longest() -> None:
    clock = Clock()
    attempts = InvalidAttempts(1, clock=clock, max_sources=2)
    a, b, c = (source_of(ipaddress.ip_address(f"192.0.2.{n}")) for n in (1, 2, 3))
    assert attempts.refused(a) is None and attempts.refused(b) is None
    assert attempts.refused(a) is not None  # a is now the most recently seen
    assert attempts.refused(c) is None  # b goes
    assert len(attempts) == 2
    assert attempts.refused(a) is not None  # still remembered
    assert attempts.refused(b) is None  # forgotten: a full bucket again


@pytest.mark.parametrize(
    ("address", "same_as"),
    [
        ("2001:db8::1", "2001:db8::ffff:1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
    ],
)
def test_sources(address: str, same_as: str) -> None:
    assert source_of(ipaddress.ip_address(address)) == source_of(ipaddress.ip_address(same_as))
    assert source_of(ipaddress.ip_address("192.0.2.1")) != source_of(
        ipaddress.ip_address("192.0.2.2")
    )


@pytest.mark.parametrize(
    ("peer", "header", "client"),
    [
        ("10.0.0.5", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.5", ["203.0.113.1, 198.51.100.1, 10.0.0.6"], "198.51.100.1"),
        ("10.0.0.5", ["203.0.113.1", "198.51.100.1"], "198.51.100.1"),  # two header lines
        ("10.0.0.5", ["10.0.0.7, 10.0.0.6"], "10.0.0.7"),  # all ours: the first asked
        ("10.0.0.5", [], "10.0.0.5"),
        ("10.0.0.5", ["garbage"], "10.0.0.5"),  # no proxy of ours writes that
        ("::ffff:10.0.0.5", ["[2001:db8::1]"], "2001:db8::1"),
        ("192.0.2.9", ["198.51.100.1"], "192.0.2.9"),  # not a proxy of ours
        ("unix", ["198.51.100.1"], None),
    ],
)
def test_the_client_address(peer: str, header: list[str], client: str | None) -> None:
    clients = ClientAddresses([ipaddress.ip_network("10.0.0.0/8")])
    found = clients.client(peer, header)
    assert found == (ipaddress.ip_address(client) if client else None)
    assert ClientAddresses([]).client("10.0.0.5", ["198.51.100.1"]) == ipaddress.ip_address(
        "10.0.0.5"
    )


def test_trusted_proxies_come_from_the_file_or_the_environment(tmp_path: Path) -> None:
    file = tmp_path / "mailer.toml"
    file.write_text('[http]\ntrusted_proxies = ["192.0.2.0/24"]\n')
    settings, _ = load_settings(file, {})
    assert settings.http.proxy_networks() == [ipaddress.ip_network("192.0.2.0/24")]
    settings, _ = load_settings(file, {"MAILER_HTTP_TRUSTED_PROXIES": "10.0.0.0/8, ::1"})
    assert settings.http.proxy_networks() == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    ]
    with pytest.raises(ConfigError, match=r"\[http\] trusted_proxies .*'10\.0\.0\.300'"):
        build_settings({"http": {"trusted_proxies": ["10.0.0.300"]}})
