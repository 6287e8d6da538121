"""The SMTP pool against a real aiosmtpd server: TLS modes, AUTH, reuse, faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailer.adapters.relay import MessageTooLarge, Relay, tls_context
from mailer.config import parse_smtp_url
from mailer.core.wire import data_section
from mailer.errors import ShuttingDown, TemporaryFailure
from tests.support.smtp import DROP, SmtpServer
from tests.support.tls import Pki, make_pki

MESSAGE = b"From: a@lucid.example\r\nTo: b@example.pl\r\nSubject: t\r\n\r\nbody\r\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def started(server: SmtpServer) -> SmtpServer:
    await server.start()
    return server


def relay_for(
    url: str, *, ca_file: Path | None = None, pool_size: int = 2, timeout: float = 5
) -> Relay:
    return Relay(
        parse_smtp_url(url, password=None),
        pool_size=pool_size,
        timeout=timeout,
        context=tls_context(ca_file),
        helo_name="mailer.test",
    )


@pytest.fixture
async def plain() -> AsyncIterator[SmtpServer]:
    server = await started(SmtpServer())
    yield server
    await server.stop()


async def test_starttls_is_required_and_never_skipped(plain: SmtpServer) -> None:
    relay = relay_for(f"smtp://127.0.0.1:{plain.port}")
    with pytest.raises(TemporaryFailure, match="STARTTLS"):
        await relay.send("a@lucid.example", "b@example.pl", MESSAGE)
    assert plain.received == []
    await relay.close()


async def test_starttls_with_a_verified_certificate(pki: Pki) -> None:
    server = await started(SmtpServer(tls_context=pki.server_context()))
    relay = relay_for(f"smtp://127.0.0.1:{server.port}", ca_file=pki.ca_file)
    reply = await relay.send("a@lucid.example", "b@example.pl", MESSAGE)
    assert reply.code == 250
    assert server.received[0].data == MESSAGE
    await relay.close()
    await server.stop()


async def test_an_untrusted_certificate_is_refused(pki: Pki) -> None:
    server = await started(SmtpServer(tls_context=pki.server_context()))
    relay = relay_for(f"smtp://127.0.0.1:{server.port}")  # the system CAs do not know ours
    with pytest.raises(TemporaryFailure, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
        await relay.send("a@lucid.example", "b@example.pl", MESSAGE)
    assert server.received == []
    await relay.close()
    await server.stop()


async def test_implicit_tls_and_auth(pki: Pki) -> None:
    server = await started(
        SmtpServer(
            tls_context=pki.server_context(), implicit_tls=True, credentials=("mailer", "s3cret")
        )
    )
    good = relay_for(f"smtps://mailer:s3cret@127.0.0.1:{server.port}", ca_file=pki.ca_file)
    assert (await good.send("a@lucid.example", "b@example.pl", MESSAGE)).code == 250
    bad = relay_for(f"smtps://mailer:wrong@127.0.0.1:{server.port}", ca_file=pki.ca_file)
    with pytest.raises(TemporaryFailure, match="authentication"):
        await bad.send("a@lucid.example", "b@example.pl", MESSAGE)
    assert len(server.received) == 1
    await good.close()
    await bad.close()
    await server.stop()


async def test_connections_are_reused(plain: SmtpServer) -> None:
    relay = relay_for(f"smtp://127.0.0.1:{plain.port}?tls=none", pool_size=2)
    replies = await asyncio.gather(
        *(relay.send("a@lucid.example", f"r{i}@example.pl", MESSAGE) for i in range(20))
    )
    assert {reply.code for reply in replies} == {250}
    assert len(plain.received) == 20
    assert plain.connections == 2
    await relay.close()


async def test_replies_are_returned_for_the_caller_to_classify(plain: SmtpServer) -> None:
    plain.rcpt_replies["gone@example.pl"] = "550 5.1.1 <gone@example.pl>: User unknown"
    plain.data_replies.append("451 4.3.0 Try again later")
    relay = relay_for(f"smtp://127.0.0.1:{plain.port}?tls=none", pool_size=1)
    refused = await relay.send("a@lucid.example", "gone@example.pl", MESSAGE)
    assert (refused.code, refused.text) == (550, "5.1.1 <gone@example.pl>: User unknown")
    later = await relay.send("a@lucid.example", "b@example.pl", MESSAGE)
    assert (later.code, later.text) == (451, "4.3.0 Try again later")
    ok = await relay.send("a@lucid.example", "b@example.pl", MESSAGE)
    assert ok.code == 250
    assert plain.connections == 1  # the connection survived the refusals
    await relay.close()


async def test_a_connection_dropped_after_data_is_a_temporary_failure(plain: SmtpServer) -> None:
    plain.data_replies.append(DROP)
    relay = relay_for(f"smtp://127.0.0.1:{plain.port}?tls=none", pool_size=1)
    with pytest.raises(TemporaryFailure, match="connection"):
        await relay.send("a@lucid.example", "b@example.pl", MESSAGE)
    assert (await relay.send("a@lucid.example", "b@example.pl", MESSAGE)).code == 250
    assert len(plain.received) == 1
    await relay.close()


async def test_a_pooled_connection_closed_by_the_relay_is_replaced(plain: SmtpServer) -> None:
    relay = relay_for(f"smtp://127.0.0.1:{plain.port}?tls=none", pool_size=1)
    assert (await relay.send("a@lucid.example", "b@example.pl", MESSAGE)).code == 250
    plain.drop_connections()  # as a relay does with connections idle too long
    await asyncio.sleep(0.05)
    assert (await relay.send("a@lucid.example", "b@example.pl", MESSAGE)).code == 250
    assert len(plain.received) == 2
    assert plain.connections == 2
    await relay.close()


async def test_a_silent_relay_times_out() -> None:
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # accepts the connection, never greets

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    relay = relay_for(f"smtp://127.0.0.1:{port}?tls=none", timeout=0.5)
    with pytest.raises(TemporaryFailure, match="relay unavailable"):
        await relay.send("a@lucid.example", "b@example.pl", MESSAGE)
    await relay.close()
    for writer in writers:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_nothing_is_sent_after_close(plain: SmtpServer) -> None:
    relay = relay_for(f"smtp://127.0.0.1:{plain.port}?tls=none")
    await relay.close()
    with pytest.raises(ShuttingDown):
        await relay.send("a@lucid.example", "b@example.pl", MESSAGE)


async def test_a_message_over_the_relays_size_is_refused_before_mail_from() -> None:
    """Postfix's default limit (10,240,000 bytes) against a 10,240,001-byte message: nothing
    of the transaction reaches the relay (0 MAIL commands) and the error gives both sizes."""
    server = await started(SmtpServer(data_size_limit=10_240_000))
    relay = relay_for(f"smtp://127.0.0.1:{server.port}?tls=none", pool_size=1)
    big = MESSAGE + b"x" * (10_240_001 - len(MESSAGE))
    async with relay.session() as session:
        assert session.size_limit == 10_240_000
        with pytest.raises(
            MessageTooLarge,
            match="message is 10240001 bytes, the relay accepts at most 10240000",
        ):
            await session.send("a@lucid.example", "b@example.pl", data_section(big))
    assert server.mail_commands == 0
    assert server.received == []
    # The connection stays good for the next message, which fits.
    assert (await relay.send("a@lucid.example", "b@example.pl", MESSAGE)).code == 250
    assert server.connections == 1
    await relay.close()
    await server.stop()


async def test_a_relay_without_a_size_limit_takes_large_messages() -> None:
    server = await started(SmtpServer(data_size_limit=0))  # no SIZE keyword in EHLO
    relay = relay_for(f"smtp://127.0.0.1:{server.port}?tls=none", pool_size=1)
    big = MESSAGE + (b"x" * 98 + b"\r\n") * 110_000
    async with relay.session() as session:
        assert session.size_limit is None
        reply = await session.send("a@lucid.example", "b@example.pl", data_section(big))
        assert reply.code == 250
    assert len(server.received) == 1
    await relay.close()
    await server.stop()


async def test_a_session_holds_a_slot_until_it_ends(plain: SmtpServer) -> None:
    """With a pool of 1, a second session waits for the first to end: what is built inside a
    session never exists for more messages than the pool has connections."""
    relay = relay_for(f"smtp://127.0.0.1:{plain.port}?tls=none", pool_size=1)
    order: list[str] = []

    async def hold(name: str) -> None:
        async with relay.session() as session:
            order.append(f"{name} in")
            await asyncio.sleep(0.05)
            await session.send("a@lucid.example", "b@example.pl", data_section(MESSAGE))
            order.append(f"{name} out")

    await asyncio.gather(hold("a"), hold("b"))
    assert order == ["a in", "a out", "b in", "b out"]
    assert plain.connections == 1
    await relay.close()
