from __future__ import annotations

from mailer.core.addresses import address_key, address_ref, mask_address


def test_address_key_is_keyed_and_case_insensitive() -> None:
    key = address_key(b"k" * 32, "Jan.Kowalski@example.pl")
    assert key == address_key(b"k" * 32, "jan.kowalski@EXAMPLE.pl")
    assert key != address_key(b"other key" * 4, "jan.kowalski@example.pl")
    assert len(key) == 32
    assert b"jan" not in key


def test_address_ref_is_short_and_reveals_nothing() -> None:
    ref = address_ref(address_key(b"k" * 32, "jan@example.pl"))
    assert ref.startswith("#") and len(ref) == 9
    assert "jan" not in ref


def test_mask_address() -> None:
    assert mask_address("jan.kowalski@example.pl") == "j***i@e***e.pl"
    assert mask_address("ab@xy.com") == "a***@x***.com"


def test_mask_address_without_a_dot_in_the_domain() -> None:
    assert mask_address("root@localhost") == "r***t@l***t"
