"""Article content by locale: each reader gets the issue's articles in their own language,
else in the list's default; the plain shape still serves every locale."""

from __future__ import annotations

from typing import Any

import asyncpg

from mailer.adapters.broker import Broker
from tests.conftest import StartService
from tests.support.dead_letters import parked, reasons
from tests.support.jobs import encode
from tests.support.newsletters import issue, subscribe, until_state
from tests.support.smtp import Received, SmtpServer

READERS = [
    ("anna@example.pl", "Anna", "pl"),
    ("john@example.com", "John", "en"),
    ("zofia@example.pl", None, None),  # no locale of her own: the list's default, pl
]


def article(title: str, body: str) -> dict[str, str]:
    return {"title": title, "body_html": f"<p>{body}</p>", "url": "https://lucid.example/blog"}


def parts(message: Received) -> tuple[str, str, str]:
    parsed = message.parsed()
    html = parsed.get_body(("html",))
    text = parsed.get_body(("plain",))
    assert html is not None and text is not None
    return str(parsed["Subject"]), html.get_content(), text.get_content()


def by_reader(smtp_server: SmtpServer) -> dict[str, tuple[str, str, str]]:
    return {message.rcpt_tos[0]: parts(message) for message in smtp_server.received}


async def test_each_reader_gets_the_articles_of_their_locale(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    await subscribe(database_url, READERS)
    await start_service(config)
    whole = issue(
        data={
            "pl": {
                "preheader": "Trzy nowe funkcje",
                "articles": [article("Tablice kanban", "Przeciągnij i upuść szanse.")],
            },
            "en": {
                "preheader": "Three new features",
                "articles": [article("Kanban boards", "Drag and drop your deals.")],
            },
        }
    )
    await portal.publish(encode(whole), routing_key="newsletter")
    await until_state(db, whole["id"], "done")
    got = by_reader(smtp_server)
    assert set(got) == {email for email, _, _ in READERS}
    for email, language in (
        ("anna@example.pl", "pl"),
        ("zofia@example.pl", "pl"),
        ("john@example.com", "en"),
    ):
        subject, html, text = got[email]
        mine, theirs = (
            (("Tablice kanban", "Przeciągnij", "Trzy nowe"), ("Kanban boards", "Drag and", "Three"))
            if language == "pl"
            else (("Kanban boards", "Drag and", "Three new"), ("Tablice kanban", "Przeciągnij"))
        )
        for part in (html, text):
            assert mine[0] in part and mine[1] in part, (email, part)
            assert not any(word in part for word in theirs), (email, part)
        assert mine[2] in html  # the preheader
        assert subject.startswith("Nowości" if language == "pl" else "What's new")


async def test_articles_keyed_by_locale_fall_back_to_the_lists_default(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    await subscribe(database_url, READERS)
    await start_service(config)
    mixed = issue(
        data={
            "preheader": "LucidCRM 5.0",
            "articles": [
                {
                    "pl": article("Nowy cennik", "Ceny od stycznia."),
                    "en": article("New prices", "From January."),
                },
                article("LucidCRM 5.0", "Released."),  # the same for everyone
                {"pl": article("Tylko po polsku", "Szkolenie w Krakowie.")},
            ],
        }
    )
    await portal.publish(encode(mixed), routing_key="newsletter")
    await until_state(db, mixed["id"], "done")
    got = by_reader(smtp_server)
    _, _, polish = got["anna@example.pl"]
    _, english_html, english = got["john@example.com"]
    assert polish.index("Nowy cennik") < polish.index("LucidCRM 5.0") < polish.index("Tylko po")
    assert "New prices" not in polish
    assert english.index("New prices") < english.index("LucidCRM 5.0") < english.index("Tylko po")
    assert "Nowy cennik" not in english and "Nowy cennik" not in english_html
    _, _, default = got["zofia@example.pl"]
    assert "Nowy cennik" in default and "Tylko po polsku" in default
    assert "New prices" not in default


async def test_content_by_locale_without_the_lists_default_is_parked(
    config: dict[str, Any],
    start_service: StartService,
    portal: Broker,
    smtp_server: SmtpServer,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    await subscribe(database_url, READERS)
    await start_service(config)
    no_default_data = issue(data={"en": {"articles": [article("Only English", "x")]}})
    no_default_article = issue(
        data={"articles": [article("Fine", "x"), {"en": article("Only English", "x")}]}
    )
    for job in (no_default_data, no_default_article):
        await portal.publish(encode(job), routing_key="newsletter")
    assert reasons(await parked(db, 2)) == [
        "data.articles.1: needs the list's default locale 'pl'",
        "data: needs the list's default locale 'pl'",
    ]
    assert smtp_server.received == []
    assert await db.fetchval("SELECT count(*) FROM issues") == 0
