"""The SMTP relay through aiosmtplib: a small pool of open connections, TLS as configured.

`session()` holds one connection (a slot of the pool) for the time it takes to build a
message and send it, so the number of messages in memory at once is bounded by the pool's
size; `send()` is both steps for a message already built. A send returns the relay's reply to
the transaction (2xx, 4xx or 5xx: the caller classifies it) and raises TemporaryFailure when
there is no reply to classify: the connection could not be made or secured, it dropped, or a
step timed out; a message larger than the relay's advertised SIZE raises MessageTooLarge
before MAIL FROM. TLS is never opportunistic: `smtp://` requires STARTTLS, `smtps://` is TLS
from the first byte, plain text only where the URL says so for a loopback relay. One TLS
context is shared by all connections."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiosmtplib

from mailer.config import SmtpRelay
from mailer.core.outcomes import Reply
from mailer.core.wire import DataSection, data_section
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

    @contextlib.asynccontextmanager
    async def session(
        self, still_wanted: Callable[[], bool] | None = None
    ) -> AsyncIterator[Session]:
        """Hold one of the pool's connections, open (EHLO done, TLS and AUTH as configured),
        for as long as the block runs: build the message inside it, so that no more messages
        exist at once than the pool has connections.

        Raises ShuttingDown once close() has begun, Withdrawn when `still_wanted`, asked when
        a connection is free, says no, and TemporaryFailure when no connection can be opened:
        in every case before any byte of a message is sent."""
        async with self._slots:
            if self._closed:
                raise ShuttingDown("the relay pool is closing")
            if still_wanted is not None and not still_wanted():
                raise Withdrawn("called off before it reached the relay")
            pooled = self._idle.pop() if self._idle else None
            session = Session(self, pooled if pooled is not None else await self._connect())
            session.pooled = pooled is not None
            session.still_wanted = still_wanted
            try:
                yield session
            finally:
                self._give_back(session)

    async def send(
        self,
        sender: str,
        recipient: str,
        message: bytes,
        still_wanted: Callable[[], bool] | None = None,
    ) -> Reply:
        """One message already built: session() and Session.send() in one call."""
        async with self.session(still_wanted) as session:
            return await session.send(sender, recipient, data_section(message))

    def _give_back(self, session: Session) -> None:
        client = session.client
        if client is None:
            return
        if session.reusable and client.is_connected and not self._closed:
            self._idle.append(client)
        else:
            client.close()

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
            if client.is_ehlo_or_helo_needed:  # no STARTTLS nor AUTH: EHLO now, for SIZE
                await client.ehlo()
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
        self,
        client: aiosmtplib.SMTP,
        sender: str,
        recipient: str,
        message: DataSection,
        envelope_id: str | None,
    ) -> Reply:
        options = [f"SIZE={message.size}"] if client.supports_extension("size") else []
        rcpt_options: list[str] = []
        if envelope_id is not None and client.supports_extension("dsn"):
            # RFC 3461: the DSN names our delivery, reports failures and delays only, and
            # returns the headers, not the whole message.
            options += ["RET=HDRS", f"ENVID={envelope_id}"]
            rcpt_options.append("NOTIFY=FAILURE,DELAY")
        try:
            await client.mail(sender, options=options)
            await client.rcpt(recipient, options=rcpt_options)
        except aiosmtplib.SMTPSenderRefused as exc:
            await _reset(client)
            return Reply(exc.code, exc.message, stage="mail")
        except aiosmtplib.SMTPRecipientRefused as exc:
            await _reset(client)
            return Reply(exc.code, exc.message, stage="rcpt")
        except aiosmtplib.SMTPServerDisconnected:
            raise _BeforeData() from None
        return await _data(client, message)

    async def close(self) -> None:
        """Refuse new sends at once; a send under way finishes on its own connection."""
        self._closed = True
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await client.quit(timeout=2)
            except (aiosmtplib.SMTPException, *_NO_REPLY):
                client.close()


class MessageTooLarge(Exception):
    """The message is larger than the relay said, in EHLO, it would accept (RFC 1870)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message is {size} bytes, the relay accepts at most {limit}")
        self.size = size
        self.limit = limit


class Session:
    """One pooled connection, held: see Relay.session()."""

    def __init__(self, relay: Relay, client: aiosmtplib.SMTP) -> None:
        self._relay = relay
        self.client: aiosmtplib.SMTP | None = client
        self.pooled = False  # taken from the pool, so possibly closed by the relay meanwhile
        self.still_wanted: Callable[[], bool] | None = None
        self.reusable = True  # between transactions, and the relay did not say 421

    @property
    def size_limit(self) -> int | None:
        """The relay's advertised SIZE, or None when it gave none (or 0: no fixed limit)."""
        return _size_limit(self.client) if self.client is not None else None

    async def send(
        self, sender: str, recipient: str, message: DataSection, envelope_id: str | None = None
    ) -> Reply:
        """The relay's reply to one transaction (the caller classifies it). With an
        `envelope_id` (printable ASCII, no `+` or `=`), a relay that offers DSN is asked for
        failure and delay notices naming it.

        Asks `still_wanted` and checks the relay's SIZE once more before MAIL FROM: a message
        called off raises Withdrawn, one too large MessageTooLarge, a pool closing meanwhile
        ShuttingDown; then nothing has been sent. TemporaryFailure when there is no reply."""
        relay = self._relay
        if relay._closed:
            raise ShuttingDown("the relay pool is closing")
        if self.still_wanted is not None and not self.still_wanted():
            raise Withdrawn("called off before it reached the relay")
        # A pooled connection the relay has closed meanwhile fails before the message is
        # transferred: then, and only then, one more try on a fresh connection is safe.
        fresh_tries = 1 if self.pooled else 0
        while True:
            if self.client is None:
                self.client = await relay._connect()
            client = self.client
            limit = _size_limit(client)
            if limit is not None and message.size > limit:
                raise MessageTooLarge(message.size, limit)
            self.reusable = False
            try:
                reply = await relay._transaction(client, sender, recipient, message, envelope_id)
            except _BeforeData:
                client.close()
                self.client = None
                if fresh_tries == 0:
                    raise TemporaryFailure("relay closed the connection") from None
                fresh_tries -= 1
                continue
            except _NO_REPLY as exc:
                client.close()
                self.client = None
                raise TemporaryFailure(f"relay connection lost: {_describe(exc)}") from None
            self.reusable = reply.code != 421
            return reply


async def _data(client: aiosmtplib.SMTP, message: DataSection) -> Reply:
    """DATA, then the section as it is. aiosmtplib's `data()` would make the message
    transparent once more, with two whole-message regular expressions on the event loop."""
    start = await client.execute_command(b"DATA")
    if start.code != 354:
        return Reply(start.code, start.message)
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    protocol.write(message.data)
    response = await protocol.read_response(timeout=client.timeout)
    return Reply(response.code, response.message)


def _size_limit(client: aiosmtplib.SMTP) -> int | None:
    if not client.supports_extension("size"):
        return None
    value = client.esmtp_extensions.get("size", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


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
