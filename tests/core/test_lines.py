from __future__ import annotations

import random

import pytest

from mailer.core.lines import line_slices


def test_the_pieces_are_the_data_cut_just_after_line_ends() -> None:
    data = b"ab\r\ncd\r\n" * 10 + b"tail"
    pieces = list(line_slices(data, 9))
    assert b"".join(pieces) == data
    assert all(piece.endswith(b"\n") for piece in pieces[:-1])
    assert all(len(piece) <= 9 for piece in pieces)
    assert pieces[-1].endswith(b"tail")


def test_a_line_longer_than_a_slice_is_one_piece() -> None:
    data = b"x" * 100 + b"\r\n" + b"y" * 3
    assert list(line_slices(data, 10)) == [b"x" * 100 + b"\r\n", b"yyy"]
    assert list(line_slices(b"z" * 50, 10)) == [b"z" * 50]


def test_nothing_gives_no_pieces() -> None:
    assert list(line_slices(b"", 10)) == []


@pytest.mark.parametrize("size", [1, 2, 5, 64])
def test_random_data_is_never_lost_or_split_inside_a_crlf(size: int) -> None:
    chooser = random.Random(size)
    for _ in range(200):
        data = b"".join(chooser.choice([b"\r\n", b"\n", b"\r", b"a", b" "]) for _ in range(40))
        pieces = list(line_slices(data, size))
        assert b"".join(pieces) == data
        assert not any(piece.endswith(b"\r") for piece in pieces[:-1])
