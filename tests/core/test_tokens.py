from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from mailer.core.tokens import (
    Confirmation,
    Subscription,
    TokenKeys,
    Undo,
    confirm_token,
    read_confirm_token,
    read_undo_token,
    read_unsubscribe_token,
    undo_token,
    unsubscribe_token,
)

KEYS = TokenKeys.from_secrets(b"s" * 40)
ANNA = Subscription(subscriber_id=123_456, list_id=3)


def flip(token: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[index] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_an_unsubscribe_token_round_trips_and_is_short() -> None:
    token = unsubscribe_token(KEYS, ANNA)
    assert len(token) == 28
    assert token.replace("-", "").replace("_", "").isalnum()  # URL-safe as it is
    assert read_unsubscribe_token(KEYS, token) == ANNA


@pytest.mark.parametrize("index", [0, 5, 6, 7, 8, 9, 20])
def test_an_altered_token_is_refused(index: int) -> None:
    assert read_unsubscribe_token(KEYS, flip(unsubscribe_token(KEYS, ANNA), index)) is None


def test_a_token_for_another_list_cannot_be_made_from_one_for_this_list() -> None:
    token = unsubscribe_token(KEYS, ANNA)
    raw = bytearray(base64.urlsafe_b64decode(token + "="))
    raw[6:8] = (4).to_bytes(2, "big")  # list 3 → list 4
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert read_unsubscribe_token(KEYS, forged) is None


@pytest.mark.parametrize("token", ["", "short", "A" * 28, "!" * 28, "é" * 28])
def test_garbage_is_refused(token: str) -> None:
    assert read_unsubscribe_token(KEYS, token) is None


def test_truncated_and_extended_tokens_are_refused() -> None:
    token = unsubscribe_token(KEYS, ANNA)
    assert read_unsubscribe_token(KEYS, token[:-1]) is None
    assert read_unsubscribe_token(KEYS, token + "A") is None


def test_another_secret_does_not_verify_but_a_retired_one_does() -> None:
    token = unsubscribe_token(KEYS, ANNA)
    assert read_unsubscribe_token(TokenKeys.from_secrets(b"t" * 40), token) is None
    rotated = TokenKeys.from_secrets(b"t" * 40, [b"s" * 40])
    assert read_unsubscribe_token(rotated, token) == ANNA
    assert read_unsubscribe_token(KEYS, unsubscribe_token(rotated, ANNA)) is None


def test_purposes_do_not_mix() -> None:
    unsubscribe = unsubscribe_token(KEYS, ANNA)
    confirm = confirm_token(KEYS, ANNA, day=20_000)
    assert read_confirm_token(KEYS, unsubscribe, today=20_000, max_age_days=14) is None
    assert read_unsubscribe_token(KEYS, confirm) is None


def test_confirm_tokens_expire() -> None:
    token = confirm_token(KEYS, ANNA, day=20_000)
    assert read_confirm_token(KEYS, token, today=20_014, max_age_days=14) == Confirmation(
        ANNA, 20_000
    )
    assert read_confirm_token(KEYS, token, today=20_015, max_age_days=14) is None


def test_a_confirm_token_knows_its_day_across_the_wrap() -> None:
    token = confirm_token(KEYS, ANNA, day=65_535)  # stored as day % 65536
    found = read_confirm_token(KEYS, token, today=65_540, max_age_days=14)
    assert found == Confirmation(ANNA, 65_535)


def test_subscriber_ids_must_fit() -> None:
    with pytest.raises(ValueError, match="out of range"):
        unsubscribe_token(KEYS, Subscription(0, 1))
    with pytest.raises(ValueError, match="out of range"):
        unsubscribe_token(KEYS, Subscription(2**48, 1))


def respellings(token: str) -> list[str]:
    """Every other way to write the same bytes that a lenient base64 decoder accepts."""
    found = [token + "=" * n for n in (1, 2, 3)]
    found += [token.replace("-", "+"), token.replace("_", "/")]
    bits = len(token) * 6 - len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) * 8
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    found += [token[:-1] + alphabet[last | spare] for spare in range(1, 2**bits)]
    return [spelling for spelling in found if spelling != token]


# ids chosen so that the bytes hold base64's `-` and `_` (`+` and `/` once respelled)
ODD = Subscription(0xFBEFBEFBEFBE, 0xFBEF)
MADE: dict[str, tuple[str, Callable[[str], object]]] = {
    "unsubscribe": (unsubscribe_token(KEYS, ODD), lambda t: read_unsubscribe_token(KEYS, t)),
    "confirm": (
        confirm_token(KEYS, Subscription(0xFFFFFFFFFFFF, 0xFFFF), 20_000),
        lambda t: read_confirm_token(KEYS, t, today=20_000, max_age_days=14),
    ),
    "undo": (
        undo_token(KEYS, Undo(ODD, -1, 2**32 - 1)),
        lambda t: read_undo_token(KEYS, t, now=0),
    ),
}


@pytest.mark.parametrize("purpose", sorted(MADE))
def test_a_token_has_one_spelling(purpose: str) -> None:
    token, read = MADE[purpose]
    assert read(token) is not None
    spellings = respellings(token)
    assert any("+" in t or "/" in t for t in spellings)
    if purpose == "confirm":  # 23 bytes in 31 characters: two spare bits
        assert len([t for t in spellings if "=" not in t and t[:-1] == token[:-1]]) == 3
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for spelling in spellings:
        if "=" not in spelling:  # the lenient decoder reads the very same bytes
            assert base64.urlsafe_b64decode(spelling + "=" * (-len(spelling) % 4)) == raw
        assert read(spelling) is None, spelling


def test_an_undo_token_round_trips_until_it_expires() -> None:
    undo = Undo(ANNA, unsubscribed_at=1_764_000_000_123_456, expires=1_764_000_900)
    token = undo_token(KEYS, undo)
    assert len(token) == 44
    assert read_undo_token(KEYS, token, now=1_764_000_899) == undo
    assert read_undo_token(KEYS, token, now=1_764_000_900) is None


def test_an_undo_token_is_no_other_token() -> None:
    undo = undo_token(KEYS, Undo(ANNA, 1, 2**31))
    assert read_unsubscribe_token(KEYS, undo) is None
    assert read_confirm_token(KEYS, undo, today=0, max_age_days=14) is None
    assert read_undo_token(KEYS, unsubscribe_token(KEYS, ANNA), now=0) is None
    assert read_undo_token(TokenKeys.from_secrets(b"t" * 40), undo, now=0) is None
    assert read_undo_token(KEYS, flip(undo, 10), now=0) is None  # its time altered
