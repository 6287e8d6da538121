from __future__ import annotations

from uuid import UUID

import pytest

from mailer.core.audience import (
    MailingList,
    imported_person,
    newsletter_locale,
    newsletter_message_id,
)
from mailer.core.messages import Mailbox

NEWS = MailingList(7, "lucid-news", "Lucid News", Mailbox("news@lucid.example", "Lucid News"), "pl")


def test_list_id_and_message_id() -> None:
    assert NEWS.list_id() == "Lucid News <lucid-news.lucid.example>"
    polish = MailingList(8, "nowosci", "Nowości", NEWS.sender, "pl")
    assert polish.list_id() == "<nowosci.lucid.example>"  # a phrase must stay plain ASCII
    issue = UUID("0e9b7d8c-1c55-4f0a-b7b5-0d6f3a2b9c11")
    assert newsletter_message_id(issue, 42, NEWS) == f"<{issue}.42@lucid.example>"


def test_locale_falls_back_to_the_list() -> None:
    assert newsletter_locale("en", NEWS) == "en"
    assert newsletter_locale(None, NEWS) == "pl"


def test_an_imported_row() -> None:
    person = imported_person(["Anna.Nowak@EXAMPLE.pl ", " Anna Nowak", "EN"], hash_key=b"k" * 32)
    assert (person.email, person.name, person.locale) == (
        "Anna.Nowak@example.pl",
        "Anna Nowak",
        "en",
    )
    bare = imported_person(["anna@example.pl"], hash_key=b"k" * 32)
    assert (bare.name, bare.locale) == (None, None)
    assert bare.address_key == imported_person(["ANNA@example.pl"], hash_key=b"k" * 32).address_key


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ([], "no e-mail address"),
        (["  "], "no e-mail address"),
        (["anna"], "not a valid e-mail address"),
        (["anna@example.pl", "A\r\nB"], "name: contains a line break"),
        (["anna@example.pl", "x" * 257], "name: longer than 256"),
        (["anna@example.pl", "", "de"], "locale: 'de' is not pl or en"),
        (["anna@example.pl", "", "pl", "extra"], "4 columns"),
    ],
)
def test_bad_rows_say_why(fields: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        imported_person(fields, hash_key=b"k" * 32)
