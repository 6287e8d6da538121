from __future__ import annotations

import base64
from datetime import date, timedelta

import pytest

from mailer.core.return_paths import (
    MAX_DELIVERY_ID,
    TOKEN_LENGTH,
    ReturnPathKeys,
    Verdict,
    decode,
    encode_token,
    find_tokens,
    return_path,
)
from mailer.core.tokens import TokenKeys, read_unsubscribe_token

KEYS = ReturnPathKeys.from_secrets(b"s" * 40)
DOMAIN = "bounces.lucid.example"
SENT = date(2026, 12, 1)
DELIVERY = 987_654_321


def read(value: str, today: date = SENT, max_age_days: int = 30) -> Verdict:
    return decode(KEYS, value, today=today, max_age_days=max_age_days).verdict


def flip_bit(token: str, index: int) -> str:
    raw = bytearray(base64.b32decode(token.upper() + "=" * (-len(token) % 8)))
    raw[index] ^= 0x01
    return base64.b32encode(bytes(raw)).decode().rstrip("=").lower()


def test_a_return_path_round_trips_and_names_only_the_delivery() -> None:
    address = return_path(KEYS, DELIVERY, SENT, DOMAIN)
    local, _, domain = address.partition("@")
    assert domain == DOMAIN
    assert local.startswith("b-") and len(local) == 2 + TOKEN_LENGTH == 39
    assert local[2:].isascii() and set(local[2:]) <= set("abcdefghijklmnopqrstuvwxyz234567")
    decoded = decode(KEYS, address, today=SENT + timedelta(days=3), max_age_days=30)
    assert (decoded.verdict, decoded.delivery_id, decoded.day) == (Verdict.VALID, DELIVERY, SENT)
    assert decoded.valid


@pytest.mark.parametrize("delivery_id", [1, 2**32, MAX_DELIVERY_ID])
def test_the_local_part_stays_within_64_octets_for_every_delivery_id(delivery_id: int) -> None:
    """RFC 5321 §4.5.3.1.1: a local part longer than 64 octets may be refused by any MTA."""
    local = return_path(KEYS, delivery_id, SENT, DOMAIN).partition("@")[0]
    assert len(local.encode()) <= 64
    assert decode(KEYS, local, today=SENT, max_age_days=1).delivery_id == delivery_id


@pytest.mark.parametrize("delivery_id", [0, -1, MAX_DELIVERY_ID + 1])
def test_a_delivery_id_out_of_range_is_refused(delivery_id: int) -> None:
    with pytest.raises(ValueError, match="delivery id"):
        encode_token(KEYS, delivery_id, SENT)


def test_the_token_carries_no_personal_data() -> None:
    """Only the delivery id is in it: the same delivery on the same day gives the same token,
    whatever the address; the recipient is looked up by the delivery, never carried."""
    assert encode_token(KEYS, DELIVERY, SENT) == encode_token(KEYS, DELIVERY, SENT)
    assert encode_token(KEYS, DELIVERY, SENT) != encode_token(KEYS, DELIVERY + 1, SENT)


def test_it_expires_after_the_configured_days_and_never_before() -> None:
    token = encode_token(KEYS, DELIVERY, SENT)
    assert read(token, SENT + timedelta(days=30)) is Verdict.VALID
    assert read(token, SENT + timedelta(days=31)) is Verdict.EXPIRED
    assert read(token, SENT + timedelta(days=7), max_age_days=6) is Verdict.EXPIRED
    expired = decode(KEYS, token, today=SENT + timedelta(days=400), max_age_days=30)
    assert (expired.delivery_id, expired.day) == (DELIVERY, SENT)  # authentic, but too old


def test_a_token_dated_ahead_of_today_is_not_valid() -> None:
    assert read(encode_token(KEYS, DELIVERY, SENT + timedelta(days=2))) is Verdict.EXPIRED


def test_the_day_wraps_modulo_65536_days_like_the_confirm_links() -> None:
    late = date(1970, 1, 1) + timedelta(days=65_536 + 100)
    token = encode_token(KEYS, DELIVERY, late)
    decoded = decode(KEYS, token, today=late + timedelta(days=1), max_age_days=30)
    assert (decoded.verdict, decoded.day) == (Verdict.VALID, late)


@pytest.mark.parametrize("index", range(23))
def test_any_altered_bit_is_refused(index: int) -> None:
    """Every byte: key id, day, delivery id and the MAC itself."""
    altered = flip_bit(encode_token(KEYS, DELIVERY, SENT), index)
    decoded = decode(KEYS, altered, today=SENT, max_age_days=30)
    assert decoded.verdict is Verdict.FORGED
    assert decoded.delivery_id is None  # nothing unsigned is reported


def test_a_forged_token_for_another_delivery_is_refused() -> None:
    token = encode_token(KEYS, DELIVERY, SENT)
    raw = bytearray(base64.b32decode(token.upper() + "=" * (-len(token) % 8)))
    raw[3:11] = (DELIVERY + 1).to_bytes(8, "big")
    forged = base64.b32encode(bytes(raw)).decode().rstrip("=").lower()
    assert read(forged) is Verdict.FORGED


def test_another_secret_does_not_verify_but_a_retired_one_does() -> None:
    token = encode_token(KEYS, DELIVERY, SENT)
    other = ReturnPathKeys.from_secrets(b"t" * 40)
    assert decode(other, token, today=SENT, max_age_days=30).verdict is Verdict.FORGED
    rotated = ReturnPathKeys.from_secrets(b"t" * 40, [b"s" * 40])
    assert decode(rotated, token, today=SENT, max_age_days=30).delivery_id == DELIVERY
    assert encode_token(rotated, DELIVERY, SENT) != token  # new ones use the new key


def test_a_return_path_key_is_not_a_link_token_key() -> None:
    """Same secret, separate purposes: neither kind of token opens the other."""
    links = TokenKeys.from_secrets(b"s" * 40)
    assert links.signing not in KEYS.accepted
    assert read_unsubscribe_token(links, encode_token(KEYS, DELIVERY, SENT)) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "b-",
        "b-short@" + DOMAIN,
        "b-" + "a" * (TOKEN_LENGTH + 1),
        "b-" + "1" * TOKEN_LENGTH,
        "b-" + "é" * TOKEN_LENGTH,
        "postmaster@" + DOMAIN,
    ],
)
def test_garbage_is_malformed(value: str) -> None:
    assert read(value) is Verdict.MALFORMED


def test_truncated_and_extended_tokens_are_malformed() -> None:
    token = encode_token(KEYS, DELIVERY, SENT)
    assert read(token[:-1]) is Verdict.MALFORMED
    assert read(token + "a") is Verdict.MALFORMED


def test_case_changed_by_an_mta_still_verifies() -> None:
    address = return_path(KEYS, DELIVERY, SENT, DOMAIN)
    assert read(address.upper()) is Verdict.VALID
    assert read(" " + address.partition("@")[0] + " ") is Verdict.VALID


def test_tokens_are_found_in_text_in_order() -> None:
    first = return_path(KEYS, DELIVERY, SENT, DOMAIN)
    second = return_path(KEYS, DELIVERY + 1, SENT, DOMAIN)
    text = f"To: <{first.upper()}>\nReturn-Path: <{second}>\nb-tooshort@{DOMAIN} x{first}"
    found = list(find_tokens(text))
    assert found == [first[2:].partition("@")[0], second[2:].partition("@")[0]]
