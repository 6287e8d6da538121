from __future__ import annotations

import pytest

from mailer.core.passwords import check_new_password, hash_password, verify_password


def test_a_hash_is_argon2id_salted_and_verifies_only_its_password() -> None:
    first, second = hash_password("a long enough password"), hash_password("a long enough password")
    assert first.startswith("$argon2id$")
    assert first != second  # salted
    assert verify_password(first, "a long enough password")
    assert not verify_password(first, "a long enough passwore")
    assert not verify_password("not a hash", "a long enough password")


def test_an_unknown_account_never_verifies() -> None:
    assert not verify_password(None, "no such operator")
    assert not verify_password(None, "")


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("short", "at least 12"),
        ("x" * 1025, "at most 1024"),
        ("twelve chars\nand a newline", "control characters"),
        ("with a\x00NUL byte in it", "control characters"),
    ],
)
def test_weak_or_odd_new_passwords_are_refused(password: str, problem: str) -> None:
    found = check_new_password(password)
    assert found is not None and problem in found


def test_a_good_new_password_passes() -> None:
    assert check_new_password("correct horse battery staple") is None
