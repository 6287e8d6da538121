"""The SMTP relay through aiosmtplib: a small pool of open connections, TLS as configured.

`send()` returns the relay's reply to the transaction (2xx, 4xx or 5xx: the caller
classifies it) and raises TemporaryFailure when there is no reply to classify: the connection
could not be made or secured, it dropped, or a step timed out. TLS is never opportunistic:
`smtp://` requires STARTTLS, `smtps://` is TLS from the first byte, plain text only where the
URL says so for a loopback relay. One TLS context is shared by all connections.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import aiosmtplib

from mailer.config import SmtpRelay
from mailer.core.outcomes import Reply
from mailer.errors import RelayUnavailable, ShuttingDown, TemporaryFailure, Withdrawn

log = logging.getLogger(__name__)

_NO_REPLY = (
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPTimeoutError,
    aiosmtplib.SMTPConnectError,
    OSError,
    asyncio.TimeoutError,
)


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class Relay:
    def __init__(
        self,
        relay: SmtpRelay,
        *,
        pool_size: int,
        timeout: float,
        context: ssl.SSLContext,
        helo_name: str | None = None,
    ) -> None:
        self.relay = relay
        self._timeout = timeout
        self._context = context
        self._helo_name = helo_name or socket.gethostname()
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[aiosmtplib.SMTP] = []
        self._closed = False

    async def send(
        self,
        sender: str,
        recipient: str,
        message: bytes,
        still_wanted: Callable[[], bool] | None = None,
    ) -> Reply:
        """Raises ShuttingDown once close() has begun, and Withdrawn when `still_wanted`,
        asked when a connection is free, says no: in both cases before any byte is sent."""
        async with self._slots:
            if self._closed:
                raise ShuttingDown("the relay pool is closing")
            if still_wanted is not None and not still_wanted():
                raise Withdrawn("called off before it reached the relay")
            client = self._idle.pop() if self._idle else None
            # A pooled connection the relay has closed meanwhile fails before the message is
            # transferred: then, and only then, one more try on a fresh connection is safe.
            fresh_tries = 1 if client is not None else 0
            while True:
                if client is None:
                    client = await self._connect()
                try:
                    reply = await self._transaction(client, sender, recipient, message)
                except _BeforeData:
                    client.close()
                    client = None
                    if fresh_tries == 0:
                        raise TemporaryFailure("relay closed the connection") from None
                    fresh_tries -= 1
                    continue
                except _NO_REPLY as exc:
                    client.close()
                    raise TemporaryFailure(f"relay connection lost: {_describe(exc)}") from None
                break
            if client.is_connected and reply.code != 421 and not self._closed:
                self._idle.append(client)
            else:
                client.close()
            return reply

    async def _connect(self) -> aiosmtplib.SMTP:
        relay = self.relay
        client = aiosmtplib.SMTP(
            hostname=relay.host,
            port=relay.port,
            use_tls=relay.implicit_tls,
            start_tls=relay.starttls,
            tls_context=self._context if relay.implicit_tls or relay.starttls else None,
            local_hostname=self._helo_name,
            timeout=self._timeout,
            username=relay.username,
            password=relay.password.get_secret_value() if relay.password else None,
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            client.close()
            log.error(
                "relay %s refused our credentials: %s %s", relay.display, exc.code, exc.message
            )
            raise RelayUnavailable(
                f"relay refused authentication: {exc.code} {exc.message}"
            ) from None
        except aiosmtplib.SMTPException as exc:
            client.close()
            log.error("cannot open a session with relay %s: %s", relay.display, _describe(exc))
            raise RelayUnavailable(f"relay unavailable: {_describe(exc)}") from None
        except _NO_REPLY as exc:
            client.close()
            raise RelayUnavailable(f"relay unavailable: {_describe(exc)}") from None
        return client

    async def _transaction(
        self, client: aiosmtplib.SMTP, sender: str, recipient: str, message: bytes
    ) -> Reply:
        options = [f"SIZE={len(message)}"] if client.supports_extension("size") else []
        try:
            await client.mail(sender, options=options)
            await client.rcpt(recipient)
        except aiosmtplib.SMTPSenderRefused as exc:
            await _reset(client)
            return Reply(exc.code, exc.message, stage="mail")
        except aiosmtplib.SMTPRecipientRefused as exc:
            await _reset(client)
            return Reply(exc.code, exc.message, stage="rcpt")
        except aiosmtplib.SMTPServerDisconnected:
            raise _BeforeData() from None
        try:
            response = await client.data(message)
        except aiosmtplib.SMTPDataError as exc:
            return Reply(exc.code, exc.message)
        return Reply(response.code, response.message)

    async def close(self) -> None:
        """Refuse new sends at once; a send under way finishes on its own connection."""
        self._closed = True
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await client.quit(timeout=2)
            except (aiosmtplib.SMTPException, *_NO_REPLY):
                client.close()


class _BeforeData(Exception):
    """The connection was gone before the message was transferred: safe to try another."""


async def _reset(client: aiosmtplib.SMTP) -> None:
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, *_NO_REPLY):
        client.close()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        text = f"{exc.code} {exc.message}"
    return text
