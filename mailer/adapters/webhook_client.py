"""POSTing a webhook batch (aiohttp), behind the SSRF guard.

The host of every request is resolved by `GuardedResolver`, which refuses the whole name
when any of its addresses is off limits (mailer/core/webhooks/targets.py) and hands the
connector only the addresses it checked: the connection goes to an address that was
checked, with no second lookup in between for a DNS rebinding to slip into. A host that is
an IP address is checked before the request, since aiohttp connects to it unresolved.

Redirects are not followed; no proxy from the environment is used; at most
MAX_ANSWER_BYTES of an answer's body are read (the rest is dropped with the connection);
the whole request, connecting included, has one timeout.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from mailer.core.webhooks.targets import Network, check_url, literal_address, refusal

MAX_ANSWER_BYTES = 4096
USER_AGENT = "mailer-webhooks/1"


class RefusedTarget(OSError):
    """An address the SSRF guard refuses; the message says which and why."""


class GuardedResolver(AbstractResolver):
    def __init__(self, allow: Sequence[Network]) -> None:
        self._allow = list(allow)
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        for one in found:
            address = literal_address(one["host"].partition("%")[0])
            why = "not an IP address" if address is None else refusal(address, self._allow)
            if why is not None:
                raise RefusedTarget(f"{host} resolves to a refused address: {why}")
        return found

    async def close(self) -> None:
        await self._resolver.close()


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None  # None: no answer (refused, timeout, connection error)
    reason: str  # what operators read; never the body or the address of a person
    seconds: float


class WebhookClient:
    """One aiohttp session for every endpoint of the process; opened by `start`."""

    def __init__(
        self, *, allow: Sequence[Network], timeout: float, context: ssl.SSLContext
    ) -> None:
        self._allow = list(allow)
        self._timeout = timeout
        self._context = context
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self._allow),
            use_dns_cache=False,
            ssl=self._context,
            limit=0,  # the dispatcher bounds the requests in flight
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            trust_env=False,
            auto_decompress=False,
            headers={"User-Agent": USER_AGENT},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def refused(self, url: str) -> str | None:
        """Why `url` may not be requested before any connection: a URL that is not an
        endpoint, or a host that is an IP address off limits."""
        try:
            endpoint = check_url(url)
        except ValueError as exc:
            return str(exc)
        address = literal_address(endpoint.host)
        return None if address is None else refusal(address, self._allow)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        assert self._session is not None, "the client is not started"
        loop = asyncio.get_running_loop()
        began = loop.time()
        why = self.refused(url)
        if why is not None:
            return Answer(None, f"refused: {why}", 0.0)
        try:
            status = await self._exchange(self._session, url, body, headers)
        except TimeoutError:  # aiohttp's own timeouts are TimeoutErrors too
            return Answer(None, f"no answer within {self._timeout:g} s", loop.time() - began)
        except aiohttp.ClientError as exc:
            return Answer(None, self._failure(exc), loop.time() - began)
        reason = f"answered {status}"
        if 300 <= status < 400:
            reason += " (redirects are not followed)"
        return Answer(status, reason, loop.time() - began)

    @staticmethod
    async def _exchange(
        session: aiohttp.ClientSession, url: str, body: bytes, headers: Mapping[str, str]
    ) -> int:
        async with session.post(
            url,
            data=body,
            headers={**headers, "Content-Type": "application/json"},
            allow_redirects=False,
        ) as response:
            await response.content.read(MAX_ANSWER_BYTES)  # bounded; never shown
            if not response.content.at_eof():
                response.close()  # the rest is dropped with the connection
            return response.status

    @staticmethod
    def _failure(exc: aiohttp.ClientError) -> str:
        inner: object = getattr(exc, "os_error", None)
        if isinstance(inner, RefusedTarget):
            return f"refused: {inner}"
        if isinstance(inner, OSError) and inner.strerror:
            return f"cannot connect: {inner.strerror}"
        if isinstance(exc, aiohttp.ClientConnectorError):
            return f"cannot connect: {type(exc).__name__}"
        return f"failed: {type(exc).__name__}"
