"""Subscribers and issues for newsletter tests."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from mailer.adapters.subscribers import Subscribers
from mailer.core.audience import imported_person
from mailer.core.tokens import derive_key
from tests.conftest import SECRET
from tests.support.waiting import eventually

HASH_KEY = derive_key(SECRET.encode(), "address")


def people(count: int, *, domain: str = "example.pl") -> list[tuple[str, str | None, str | None]]:
    """Mixed locales; every fifth person has no name, every seventh no locale of their own."""
    found = []
    for n in range(count):
        name = None if n % 5 == 0 else f"Osoba {n}"
        locale = None if n % 7 == 0 else ("en" if n % 3 == 0 else "pl")
        found.append((f"person{n}@{domain}", name, locale))
    return found


async def subscribe(
    database_url: str,
    rows: Sequence[tuple[str, str | None, str | None]],
    list_slug: str = "lucid-news",
) -> dict[str, int]:
    """Subscribe people as an import would; returns their subscriber ids by address."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        subscribers = Subscribers(pool)
        list_id = (await subscribers.list_ids([list_slug]))[list_slug]
        persons = [
            imported_person([e, n or "", loc or ""], hash_key=HASH_KEY) for e, n, loc in rows
        ]
        await subscribers.import_rows(list_id, persons)
        ids = await pool.fetch(
            "SELECT id, email FROM subscribers WHERE email = ANY($1)", [p.email for p in persons]
        )
        return {row["email"]: row["id"] for row in ids}
    finally:
        await pool.close()


def issue(**overrides: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "kind": "newsletter",
        "version": 1,
        "id": str(uuid.uuid4()),
        "list": "lucid-news",
        "subject": {
            "pl": "Nowości w LucidCRM — listopad 2026",
            "en": "What's new in LucidCRM — November 2026",
        },
        "template": "newsletter",
        "data": {
            "preheader": "Trzy nowe funkcje i zmiany w cenniku",
            "articles": [
                {
                    "title": "Kanban w LucidCRM",
                    "body_html": "<p>Przeciągnij i upuść szanse sprzedaży.</p>",
                    "url": "https://lucid.example/blog/kanban",
                }
            ],
        },
    }
    job.update(overrides)
    return job


async def issue_state(db: asyncpg.Connection, issue_id: str) -> str | None:
    state: str | None = await db.fetchval(
        "SELECT state FROM issues WHERE id = $1", uuid.UUID(issue_id)
    )
    return state


async def until_state(
    db: asyncpg.Connection, issue_id: str, state: str, timeout: float = 60
) -> None:
    async def reached() -> bool:
        return await issue_state(db, issue_id) == state

    await eventually(reached, timeout=timeout)


async def outcomes(db: asyncpg.Connection, issue_id: str) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT status, count(*) AS n FROM deliveries WHERE job_id = $1 GROUP BY status",
        uuid.UUID(issue_id),
    )
    return {row["status"]: row["n"] for row in rows}
