from __future__ import annotations

import base64

import pytest

from mailer.core.tokens import (
    Subscription,
    TokenKeys,
    confirm_token,
    read_confirm_token,
    read_unsubscribe_token,
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
    assert read_confirm_token(KEYS, token, today=20_014, max_age_days=14) == ANNA
    assert read_confirm_token(KEYS, token, today=20_015, max_age_days=14) is None


def test_subscriber_ids_must_fit() -> None:
    with pytest.raises(ValueError, match="out of range"):
        unsubscribe_token(KEYS, Subscription(0, 1))
    with pytest.raises(ValueError, match="out of range"):
        unsubscribe_token(KEYS, Subscription(2**48, 1))
