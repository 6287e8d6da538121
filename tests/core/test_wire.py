"""The DATA section mailer writes is byte for byte what aiosmtplib's `data()` would have
written for the same message, whatever the slices."""

from __future__ import annotations

import random

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from mailer.core.wire import data_section


def aiosmtplib_data(message: bytes) -> bytes:
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"


def test_a_dot_starting_a_line_is_doubled_and_the_section_ends_with_a_dot_line() -> None:
    section = data_section(b".first\r\nmiddle\r\n.\r\n..two\r\nlast")
    assert section.data == b"..first\r\nmiddle\r\n..\r\n...two\r\nlast\r\n.\r\n"
    assert section.size == len(b".first\r\nmiddle\r\n.\r\n..two\r\nlast")


def test_bare_line_ends_become_crlf() -> None:
    assert data_section(b"a\nb\rc\r\n.d\r.e").data == b"a\r\nb\r\nc\r\n..d\r\n..e\r\n.\r\n"


def test_an_empty_message_is_an_empty_line() -> None:
    assert data_section(b"").data == aiosmtplib_data(b"") == b"\r\n.\r\n"


@pytest.mark.parametrize("slice_bytes", [1, 2, 3, 7, 64, 65536])
def test_random_messages_match_aiosmtplib(slice_bytes: int) -> None:
    chooser = random.Random(slice_bytes)
    atoms = [b"\r\n", b"\n", b"\r", b".", b"..", b"a", b" ", b"\r\n.", b"\n."]
    for _ in range(300):
        message = b"".join(chooser.choice(atoms) for _ in range(chooser.randrange(60)))
        assert data_section(message, slice_bytes).data == aiosmtplib_data(message), message


def test_a_large_message_matches_aiosmtplib() -> None:
    message = (b"line of text\r\n.dotted\r\n" * 20_000) + b"\n.bare\r" * 1000
    assert data_section(message).data == aiosmtplib_data(message)
