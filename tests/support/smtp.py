"""A real SMTP server for tests (aiosmtpd, in-process) whose faults are injected server-side."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

DROP = "drop"  # a DATA fault: close the connection instead of answering
LOST = "lost"  # a DATA fault: store the message, then close the connection before the 250
Reply = str | bytes  # bytes go on the wire as they are: a reply that is not UTF-8


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    at: float = 0.0  # time.monotonic() when the data arrived
    helo: str | None = None  # the name the client gave in EHLO
    mail_options: tuple[str, ...] = ()  # DSN parameters of MAIL FROM (with `dsn`)
    rcpt_options: tuple[str, ...] = ()  # DSN parameters of RCPT TO (with `dsn`)

    def parsed(self) -> EmailMessage:
        message = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(message, EmailMessage)
        return message


_DSN_MAIL = frozenset({"RET", "ENVID"})
_DSN_RCPT = frozenset({"NOTIFY", "ORCPT"})


def _strip(arg: str | None, names: frozenset[str]) -> tuple[str | None, list[str]]:
    if arg is None:
        return arg, []
    words = arg.split(" ")
    found = [word for word in words if word.split("=", 1)[0].upper() in names]
    return " ".join(word for word in words if word not in found), found


class _DsnSMTP(SMTP):
    """Offers DSN (RFC 3461), which aiosmtpd does not, and keeps the parameters given."""

    dsn_mail: list[str]
    dsn_rcpt: list[str]

    async def smtp_MAIL(self, arg: str | None) -> None:
        arg, self.dsn_mail = _strip(arg, _DSN_MAIL)
        self.dsn_rcpt = []
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        arg, found = _strip(arg, _DSN_RCPT)
        self.dsn_rcpt.extend(found)
        await super().smtp_RCPT(arg)


@dataclass
class SmtpServer:
    """Accepts everything unless told otherwise.

    `rcpt_replies[address]` answers RCPT for that address; `data_replies` answers the next
    DATA commands in turn (a reply, DROP to close the connection after the data, or LOST to
    store the message and then close it). `mail_reply` answers every MAIL FROM while set.
    After `hold_after` messages are stored, DATA waits for `release` to be set before it
    answers; a message whose client hung up meanwhile is not stored. `before_reply` runs
    after a message is stored and before its 250 is sent.
    """

    tls_context: ssl.SSLContext | None = None
    implicit_tls: bool = False
    credentials: tuple[str, str] | None = None
    received: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, Reply] = field(default_factory=dict)
    data_replies: deque[Reply] = field(default_factory=deque)
    mail_reply: Reply | None = None
    hold_after: int | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)
    before_reply: Callable[[Received], Awaitable[None]] | None = None
    mail_from_seen: int = 0  # MAIL FROM commands received
    data_delay: float = 0.0  # seconds before answering DATA: a slow relay
    data_size_limit: int | None = 33554432  # advertised in EHLO as SIZE (aiosmtpd's default)
    mail_commands: int = 0  # MAIL FROM commands accepted
    domain_delays: dict[str, float] = field(default_factory=dict)  # … for some domains only
    domain_replies: dict[str, Reply] = field(default_factory=dict)  # DATA answer by domain
    in_flight: Counter[str] = field(default_factory=Counter)
    most_in_flight: Counter[str] = field(default_factory=Counter)  # per recipient domain
    connections: int = 0
    rcpt_log: list[tuple[str, float]] = field(default_factory=list)  # (address, monotonic)
    dsn: bool = False  # offer DSN in EHLO and record its parameters
    port: int = 0
    _server: asyncio.Server | None = None
    _sessions: list[SMTP] = field(default_factory=list)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def protocol() -> Any:
            self.connections += 1
            session = (_DsnSMTP if self.dsn else SMTP)(
                self,
                hostname="test-relay",
                loop=loop,
                tls_context=None if self.implicit_tls else self.tls_context,
                require_starttls=self.tls_context is not None and not self.implicit_tls,
                auth_required=self.credentials is not None,
                auth_require_tls=self.credentials is not None and not self.implicit_tls,
                authenticator=self._authenticate if self.credentials else None,
                data_size_limit=self.data_size_limit,
            )
            self._sessions.append(session)
            return session

        self._server = await loop.create_server(
            protocol, "127.0.0.1", 0, ssl=self.tls_context if self.implicit_tls else None
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def drop_connections(self) -> None:
        for session in self._sessions:
            if session.transport is not None:
                session.transport.close()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and (data.login.decode(), data.password.decode()) == self.credentials
        )
        return AuthResult(success=ok, handled=False)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.dsn:
            responses.insert(len(responses) - 1, "250-DSN")
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> Reply:
        self.mail_from_seen += 1
        if self.mail_reply is not None:
            return self.mail_reply
        self.mail_commands += 1
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> Reply:
        self.rcpt_log.append((address, time.monotonic()))
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> Reply:
        domain = envelope.rcpt_tos[0].rpartition("@")[2] if envelope.rcpt_tos else ""
        self.in_flight[domain] += 1
        self.most_in_flight[domain] = max(self.most_in_flight[domain], self.in_flight[domain])
        try:
            delay = self.domain_delays.get(domain, self.data_delay)
            if delay:
                await asyncio.sleep(delay)
            if self.hold_after is not None and len(self.received) >= self.hold_after:
                await self.release.wait()
                if server.transport is None or server.transport.is_closing():
                    return "421 4.4.2 the client left"  # nobody reads it: not stored
        finally:
            self.in_flight[domain] -= 1
        if domain in self.domain_replies:
            return self.domain_replies[domain]
        reply = self.data_replies.popleft() if self.data_replies else None
        if reply == DROP:
            assert server.transport is not None
            server.transport.close()
            return "250 never seen"
        if reply is not None and reply != LOST:
            return reply
        assert envelope.mail_from is not None and envelope.original_content is not None
        received = Received(
            envelope.mail_from,
            tuple(envelope.rcpt_tos),
            envelope.original_content,
            time.monotonic(),
            session.host_name,
            tuple(getattr(server, "dsn_mail", ())),
            tuple(getattr(server, "dsn_rcpt", ())),
        )
        self.received.append(received)
        if reply == LOST:
            assert server.transport is not None
            server.transport.close()
            return "250 never seen"
        if self.before_reply is not None:
            await self.before_reply(received)
        return f"250 2.0.0 Ok: queued as Q{len(self.received)}"

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address in r.rcpt_tos]
