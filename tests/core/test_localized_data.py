"""Which content a reader of each locale gets from an issue's `data`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mailer.core.jobs import NewsletterJob, by_locale, decode
from tests.support.newsletters import issue


def job(data: dict[str, Any], **overrides: Any) -> NewsletterJob:
    decoded = decode(json.dumps(issue(data=data, **overrides)).encode(), max_attachment_bytes=1000)
    assert isinstance(decoded, NewsletterJob)
    return decoded


def test_plain_data_serves_every_locale() -> None:
    plain = job({"preheader": "p", "articles": [{"title": "A", "body_html": ""}]})
    assert plain.data_for("en", "pl") == plain.data_for("pl", "pl") == plain.data
    assert plain.lacking("pl") is None


def test_data_by_locale_falls_back_to_the_default() -> None:
    localized = job({"pl": {"preheader": "po polsku"}, "en": {"preheader": "in English"}})
    assert localized.data_for("en", "pl") == {"preheader": "in English"}
    polish_only = job({"pl": {"preheader": "po polsku"}})
    assert polish_only.data_for("en", "pl") == {"preheader": "po polsku"}
    assert polish_only.lacking("pl") is None
    assert polish_only.lacking("en") == "data"


def test_articles_by_locale_keep_their_order() -> None:
    mixed = job(
        {
            "articles": [
                {"pl": {"title": "Jeden"}, "en": {"title": "One"}},
                {"title": "Shared"},
                {"pl": {"title": "Tylko PL"}},
            ]
        }
    )
    assert [a["title"] for a in mixed.data_for("en", "pl")["articles"]] == [
        "One",
        "Shared",
        "Tylko PL",
    ]
    assert [a["title"] for a in mixed.data_for("pl", "pl")["articles"]] == [
        "Jeden",
        "Shared",
        "Tylko PL",
    ]
    assert mixed.lacking("en") == "data.articles.2"
    nested = job(
        {"pl": {"articles": [{"pl": {"title": "x"}}]}, "en": {"articles": [{"en": {"title": "y"}}]}}
    )
    assert nested.lacking("pl") == "data.en.articles.0"


def test_subject_without_the_default_is_named_first() -> None:
    assert job({}, subject={"en": "Only English"}).lacking("pl") == "subject"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"pl": {}, "en": {}}, True),
        ({"pl": {"title": "x"}}, True),
        ({}, False),
        ({"pl": "text"}, False),  # a value that is not an object: ordinary data
        ({"pl": {}, "title": "x"}, False),  # a key that is not a locale: ordinary data
        ({"de": {}}, False),
        (["pl"], False),
    ],
)
def test_what_counts_as_by_locale(value: object, expected: bool) -> None:
    assert by_locale(value) is expected
