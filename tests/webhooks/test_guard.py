"""The SSRF guard and the bounds of a request, on a real client against real listeners:
what is refused never gets a connection; a redirect is not followed; a huge answer is read
only in part, a slow one cut at the timeout."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from mailer.adapters.relay import tls_context
from mailer.adapters.webhook_client import MAX_ANSWER_BYTES, WebhookClient
from mailer.core.webhooks.targets import networks
from tests.support.tls import Pki
from tests.support.webhooks import Receiver


async def client_for(pki: Pki, allow: list[str], timeout: float = 5) -> WebhookClient:
    client = WebhookClient(allow=networks(allow), timeout=timeout, context=tls_context(pki.ca_file))
    await client.start()
    return client


@pytest.fixture
def unsigned(receiver: Receiver) -> Receiver:
    receiver.signed = False
    return receiver


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A plain TCP listener on 127.0.0.1 and ::1 that records whoever connects."""
    seen: list[bytes] = []

    async def took(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(b"connected")
        writer.close()

    server = await asyncio.start_server(took, ["127.0.0.1", "::1"], 0)
    port = server.sockets[0].getsockname()[1]
    yield port, seen
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("[::1]", "loopback"),
        ("[::ffff:127.0.0.1]", "embeds 127.0.0.1"),
        ("2130706433", "unusual form"),  # 127.0.0.1, decimal
        ("0177.0.0.1", "unusual form"),  # 127.0.0.1, octal
        ("localhost", "resolves to a refused address"),
    ],
)
async def test_targets_off_limits_are_refused_before_any_connection(
    webhook_pki: Pki, listener: tuple[int, list[bytes]], host: str, why: str
) -> None:
    port, seen = listener
    client = await client_for(webhook_pki, allow=[])
    try:
        answer = await client.post(f"https://{host}:{port}/hooks", b"{}", {})
    finally:
        await client.close()
    assert answer.status is None and answer.reason.startswith("refused")
    assert why in answer.reason
    assert seen == [], "a refused target got a connection"


async def test_the_allow_list_opens_what_it_names(webhook_pki: Pki, unsigned: Receiver) -> None:
    unsigned.behaviour = _plain_ok
    client = await client_for(webhook_pki, allow=["127.0.0.1/32"])
    try:
        answer = await client.post(unsigned.url, b"{}", {})
        named = await client.post(unsigned.url.replace("127.0.0.1", "localhost"), b"{}", {})
    finally:
        await client.close()
    assert answer.status == 200, answer.reason
    # localhost resolves to ::1 too here, which the list does not name: the name is refused
    has_v6 = any(info[0] == socket.AF_INET6 for info in socket.getaddrinfo("localhost", 1))
    assert named.status is None if has_v6 else named.status == 200


async def _plain_ok(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def test_a_redirect_to_a_private_address_is_not_followed(
    webhook_pki: Pki, unsigned: Receiver, listener: tuple[int, list[bytes]]
) -> None:
    port, seen = listener

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"https://10.0.0.1:{port}/x")

    async def redirect_loopback(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"https://[::1]:{port}/x")

    client = await client_for(webhook_pki, allow=["127.0.0.1/32"])
    try:
        unsigned.behaviour = redirect
        first = await client.post(unsigned.url, b"{}", {})
        unsigned.behaviour = redirect_loopback
        second = await client.post(unsigned.url, b"{}", {})
    finally:
        await client.close()
    assert (first.status, second.status) == (302, 307)
    assert "redirects are not followed" in first.reason
    assert seen == []


async def test_a_huge_answer_is_read_only_in_part(webhook_pki: Pki, unsigned: Receiver) -> None:
    """A 64 MB answer: read 4 KB of it, and go (well under a second)."""
    sent = 0

    async def huge(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        chunk = b"x" * 65536
        try:
            for _ in range(1024):
                await response.write(chunk)
                sent += len(chunk)
        except (ConnectionResetError, RuntimeError):
            pass
        return response

    unsigned.behaviour = huge
    client = await client_for(webhook_pki, allow=["127.0.0.1/32"])
    try:
        began = time.monotonic()
        answer = await client.post(unsigned.url, b"{}", {})
        took = time.monotonic() - began
    finally:
        await client.close()
    assert answer.status == 200
    assert took < 5, f"{took:.2f} s"
    assert sent < 64 * 1024 * 1024, f"the receiver wrote {sent} bytes: read all of it"
    assert MAX_ANSWER_BYTES == 4096


async def test_a_slow_answer_is_cut_at_the_timeout(webhook_pki: Pki, unsigned: Receiver) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(4)
        return web.Response(status=200)

    unsigned.behaviour = slow
    client = await client_for(webhook_pki, allow=["127.0.0.1/32"], timeout=0.5)
    try:
        answer = await client.post(unsigned.url, b"{}", {})
    finally:
        await client.close()
    assert answer.status is None and answer.reason == "no answer within 0.5 s"
    assert 0.4 < answer.seconds < 3
