"""The bounce receiver: an SMTP server (aiosmtpd, SMTP mode) for the bounce domain's MX.

It takes mail only for `b-<token>@<bounce domain>` whose token verifies now; anything else
is refused at RCPT, before any data: unknown, forged or expired tokens (backscatter, forged
bounces) with 550, other domains (no relaying) with 550 5.7.1. Two exceptions:
- the feedback-loop address (`fbl@`, registered with mailbox providers for their ARF
  reports) takes a report only if the message it returns carries a return path of ours that
  verifies, else 550 after the data;
- `postmaster@` (and a bare `<postmaster>`), which RFC 5321 (4.5.1) says must be accepted:
  its mail is kept as a report for the operator, tied to the delivery whose return path it
  quotes, if one verifies (then classified like any other), else to none.
One recipient per transaction, a size cap (SIZE, 552 past it), and a token bucket per source
address (450 at MAIL FROM when a source sends faster). At most `max_connections` sessions
are open at once (421 past it), CONNECTIONS_PER_SOURCE of them from one address, and none
for longer than `max_session_seconds` (then 421 and closed: NOOP and RSET keep a session
from its idle timeout, never past that). 250 is answered only once the raw report is
committed to PostgreSQL; classification runs afterwards (`on_stored`). aiosmtpd's LMTP mode
is not used: it answers once after DATA for every recipient.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailer.core.return_paths import Decoded, ReturnPathKeys, Verdict, decode, find_tokens
from mailer.errors import TemporaryFailure

log = logging.getLogger(__name__)
MAX_SOURCES = 10_000  # source addresses whose rate is remembered
SESSION_TIMEOUT = 60.0
MAX_SCANNED = 256 * 1024  # bytes of a feedback report searched for our return paths
MAX_TOKENS = 20  # candidate return paths verified per feedback report
CONNECTIONS_PER_SOURCE = 10  # open at once from one address; more are told 421
POSTMASTER = "postmaster"


class SourceLimiter:
    """A token bucket per source address: `burst` at once, then `rate` a second."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, source: str) -> bool:
        now = self._clock()
        tokens, then = self._buckets.pop(source, (self._burst, now))
        tokens = min(self._burst, tokens + (now - then) * self._rate)
        allowed = tokens >= 1
        self._buckets[source] = (tokens - 1 if allowed else tokens, now)
        while len(self._buckets) > MAX_SOURCES:
            self._buckets.popitem(last=False)
        return allowed


class _ReceiverSMTP(SMTP):
    """aiosmtpd's SMTP, with at most `most` sessions open at once, `per_source` of them from
    one address, each closed `lifetime` seconds after it opened."""

    def __init__(
        self,
        handler: _Handler,
        *,
        open_by_source: Counter[str],
        per_source: int,
        most: int,
        lifetime: float,
        **options: Any,
    ) -> None:
        super().__init__(handler, **options)
        self._open_by_source = open_by_source
        self._per_source = per_source
        self._most = most
        self._lifetime = lifetime
        self._counted: str | None = None
        self._ends: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        source = _peer(self.session) if self.session is not None else "?"
        if self._open_by_source.total() >= self._most:
            self._refuse(transport, b"421 4.3.2 Too many connections, try again later")
            return
        if self._open_by_source[source] >= self._per_source:
            self._refuse(transport, b"421 4.7.0 Too many connections from your address")
            return
        self._open_by_source[source] += 1
        self._counted = source
        self._ends = self.loop.call_later(self._lifetime, self._session_over)

    def _refuse(self, transport: asyncio.BaseTransport, reply: bytes) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(reply + b"\r\n")
        transport.close()

    def _session_over(self) -> None:
        """The session's time is up, whatever it is doing (a NOOP every minute included)."""
        if self.transport is not None and not self.transport.is_closing():
            self._refuse(self.transport, b"421 4.4.2 Session too long, closing")

    def connection_lost(self, error: Exception | None) -> None:
        if self._ends is not None:
            self._ends.cancel()
            self._ends = None
        if self._counted is not None:
            self._open_by_source[self._counted] -= 1
            if self._open_by_source[self._counted] <= 0:
                del self._open_by_source[self._counted]
            self._counted = None
        super().connection_lost(error)


class _Handler:
    def __init__(self, receiver: BounceReceiver) -> None:
        self._receiver = receiver

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not self._receiver.limiter.allow(_peer(session)):
            self._receiver.refused("rate")
            return "450 4.7.1 Too many reports from your address, try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        receiver = self._receiver
        if envelope.rcpt_tos:
            return "452 4.5.3 One recipient per message, please"
        local, at, domain = address.rpartition("@")
        if not at and domain.lower() == POSTMASTER:  # RFC 5321 4.5.1: <Postmaster> alone
            local, domain = domain, receiver.domain
        if domain.lower().rstrip(".") != receiver.domain:
            receiver.refused("relay")
            return "550 5.7.1 Relaying denied"
        if local.lower() in receiver.mailboxes:
            envelope.rcpt_tos.append(address)  # a report that names its delivery, or none
            return "250 2.1.5 OK"
        decoded = receiver.verify(local)
        if not decoded.valid or decoded.delivery_id is None:
            receiver.refused(str(decoded.verdict))
            if decoded.verdict is Verdict.EXPIRED:
                return "550 5.1.1 This return path has expired"
            return "550 5.1.1 No such return path"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        receiver = self._receiver
        raw = envelope.original_content
        local = envelope.rcpt_tos[0].rpartition("@")[0] or envelope.rcpt_tos[0]
        if raw is None:
            return "554 5.5.1 No message"
        delivery_id: int | None
        if local.lower() == POSTMASTER:
            delivery_id = receiver.delivery_in(raw)  # None: kept, for the operator alone
        elif receiver.feedback_local is not None and local.lower() == receiver.feedback_local:
            delivery_id = receiver.delivery_in(raw)
            if delivery_id is None:
                receiver.refused("unmatched")
                return "550 5.7.1 This report returns no message of ours"
        else:
            decoded = receiver.verify(local)
            if not decoded.valid or decoded.delivery_id is None:
                return "554 5.5.1 No valid recipient"
            delivery_id = decoded.delivery_id
        try:
            report_id = await self._receiver.store(_peer(session), delivery_id, raw)
        except TemporaryFailure as exc:
            log.warning("bounce report not stored, the sender will retry: %s", exc)
            return "451 4.3.0 Cannot store the report now, try again later"
        self._receiver.on_stored(report_id)
        return f"250 2.0.0 Report stored as {report_id}"


def _peer(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)


@dataclass(eq=False, repr=False, kw_only=True)
class BounceReceiver:
    host: str
    port: int
    domain: str
    keys: ReturnPathKeys
    max_age_days: int
    max_bytes: int
    limiter: SourceLimiter
    store: Callable[[str, int | None, bytes], Awaitable[int]]
    on_stored: Callable[[int], None]
    refused: Callable[[str], None]
    today: Callable[[], date]
    feedback_local: str | None = None
    max_connections: int = 100
    max_session_seconds: float = 300.0
    # The mailboxes taken on trust at RCPT: their reports are checked after the data.
    mailboxes: set[str] = field(init=False)
    _server: asyncio.Server | None = field(init=False, default=None)
    _sessions: set[SMTP] = field(init=False, default_factory=set)
    _open_by_source: Counter[str] = field(init=False, default_factory=Counter)

    def __post_init__(self) -> None:
        self.domain = self.domain.lower()
        self.feedback_local = self.feedback_local.lower() if self.feedback_local else None
        self.mailboxes = {POSTMASTER} | ({self.feedback_local} if self.feedback_local else set())

    def delivery_in(self, raw: bytes) -> int | None:
        """The delivery whose return path a feedback loop's report quotes (the returned
        message's Return-Path or Original-Mail-From): the first that verifies."""
        text = raw[:MAX_SCANNED].decode("latin-1")
        for token in itertools.islice(dict.fromkeys(find_tokens(text)), MAX_TOKENS):
            decoded = self.verify(token)
            if decoded.valid:
                return decoded.delivery_id
        return None

    def verify(self, local_part: str) -> Decoded:
        return decode(self.keys, local_part, today=self.today(), max_age_days=self.max_age_days)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        handler = _Handler(self)

        def protocol() -> Any:
            session = _ReceiverSMTP(
                handler,
                open_by_source=self._open_by_source,
                per_source=CONNECTIONS_PER_SOURCE,
                most=self.max_connections,
                lifetime=self.max_session_seconds,
                hostname=self.domain,
                data_size_limit=self.max_bytes,
                enable_SMTPUTF8=False,
                decode_data=False,
                timeout=SESSION_TIMEOUT,
                loop=loop,
            )
            self._sessions = {
                one
                for one in self._sessions
                if one.transport is None or not one.transport.is_closing()
            }
            self._sessions.add(session)
            return session

        # Several processes on one host (`mailer run` twice) share the port; the kernel
        # spreads the connections.
        self._server = await loop.create_server(
            protocol, self.host, self.port, reuse_port=self.port != 0
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("bounce receiver listening on %s:%d for @%s", self.host, self.port, self.domain)

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for session in self._sessions:
            if session.transport is not None:
                session.transport.close()
        self._sessions.clear()
        await self._server.wait_closed()
        self._server = None
