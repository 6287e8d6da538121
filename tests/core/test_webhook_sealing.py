from __future__ import annotations

import pytest

from mailer.core.webhooks.sealing import NONCE_BYTES, SealError, SealingKeys

SECRET = "whsec_" + "A" * 43 + "="
ROW = b"endpoint-1"


def test_a_sealed_secret_opens_with_its_key_and_shows_nothing_of_it() -> None:
    keys = SealingKeys.from_secrets(b"k" * 40)
    sealed = keys.seal(SECRET, ROW, b"\x01" * NONCE_BYTES)
    assert "AAAA" not in sealed and SECRET not in sealed
    assert keys.open(sealed, ROW) == SECRET


def test_a_sealed_secret_opens_after_secret_key_is_rotated_while_the_old_is_retired() -> None:
    old = SealingKeys.from_secrets(b"o" * 40)
    sealed = old.seal(SECRET, ROW, b"\x02" * NONCE_BYTES)
    assert SealingKeys.from_secrets(b"n" * 40, [b"o" * 40]).open(sealed, ROW) == SECRET
    with pytest.raises(SealError, match="does not open"):
        SealingKeys.from_secrets(b"n" * 40).open(sealed, ROW)


def test_a_sealed_secret_moved_to_another_row_or_altered_does_not_open() -> None:
    keys = SealingKeys.from_secrets(b"k" * 40)
    sealed = keys.seal(SECRET, ROW, b"\x03" * NONCE_BYTES)
    with pytest.raises(SealError):
        keys.open(sealed, b"endpoint-2")
    altered = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    with pytest.raises(SealError):
        keys.open(altered, ROW)
    with pytest.raises(SealError, match="not a sealed"):
        keys.open("whsec_plain", ROW)
