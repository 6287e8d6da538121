"""`mailer subscribers import` with the files operators really have: Excel's CP1250, columns
in any order under a header, duplicates; run as the real command against PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg

from mailer.adapters.subscribers import Subscribers
from mailer.core.audience import imported_person
from tests.support.newsletters import HASH_KEY
from tests.support.processes import amailer, environment, mailer

POLISH_ROWS = (
    "email;name;locale\r\n"
    "anna@example.pl;Anna Nowak;pl\r\n"
    "malgorzata@example.pl;Małgorzata Łęcka;pl\r\n"
    "john@example.com;John Smith;en\r\n"
)


async def people(db: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT s.email, s.name, s.locale, sub.status FROM subscribers s"
        " JOIN subscriptions sub ON sub.subscriber_id = s.id ORDER BY s.email"
    )
    return [tuple(row) for row in rows]


async def test_a_cp1250_file_imports_what_is_valid_and_names_the_line_that_is_not(
    config: dict[str, Any], db: asyncpg.Connection, tmp_path: Path
) -> None:
    export = tmp_path / "excel.csv"
    export.write_bytes(POLISH_ROWS.encode("cp1250"))
    result = await amailer(
        "subscribers", "import", str(export), "--list", "lucid-news", env=environment(config)
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "line 3: column 2 is not utf-8: byte 0xb3 (an Excel export? try --encoding cp1250)"
    ]
    assert "Traceback" not in result.stderr
    assert result.stdout.strip() == (
        "3 rows: 2 subscribed, 0 already subscribed, 0 kept unsubscribed (they opted out), "
        "0 suppressed (bounced, complained or erased), 0 duplicate, 1 bad"
    )
    assert await people(db) == [
        ("anna@example.pl", "Anna Nowak", "pl", "subscribed"),
        ("john@example.com", "John Smith", "en", "subscribed"),
    ]

    again = await amailer(
        "subscribers",
        "import",
        str(export),
        "--list",
        "lucid-news",
        "--encoding",
        "cp1250",
        env=environment(config),
    )
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""
    assert "1 subscribed, 2 already subscribed" in again.stdout
    assert ("malgorzata@example.pl", "Małgorzata Łęcka", "pl", "subscribed") in await people(db)


def test_an_unknown_encoding_is_a_usage_error(config: dict[str, Any], tmp_path: Path) -> None:
    export = tmp_path / "people.csv"
    export.write_text(POLISH_ROWS, encoding="utf-8")
    result = mailer(
        "subscribers",
        "import",
        str(export),
        "--list",
        "lucid-news",
        "--encoding",
        "klingon",
        env=environment(config),
    )
    assert result.returncode == 2
    assert result.stderr == "mailer: --encoding: no such character set 'klingon'\n"


async def test_columns_are_found_by_their_header_names(
    config: dict[str, Any], db: asyncpg.Connection, tmp_path: Path
) -> None:
    export = tmp_path / "crm.csv"
    export.write_text(
        "\ufeffJęzyk,Imię,Nazwisko,Adres e-mail,Firma\n"
        "pl,Anna,Nowak,anna@example.pl,Lucid\n"
        "EN,John,,john@example.com,\n"
        ",,,zofia@example.pl,Acme\n",
        encoding="utf-8",
    )
    result = await amailer(
        "subscribers", "import", str(export), "--list", "lucid-news", env=environment(config)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("3 rows: 3 subscribed,")
    assert await people(db) == [
        ("anna@example.pl", "Anna Nowak", "pl", "subscribed"),
        ("john@example.com", "John", "en", "subscribed"),
        ("zofia@example.pl", None, None, "subscribed"),
    ]


async def test_a_header_without_an_email_column_is_refused_whole(
    config: dict[str, Any], db: asyncpg.Connection, tmp_path: Path
) -> None:
    export = tmp_path / "crm.csv"
    export.write_text("name;email_2;phone\nAnna;anna@example.pl;123\n", encoding="utf-8")
    result = await amailer(
        "subscribers", "import", str(export), "--list", "lucid-news", env=environment(config)
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"mailer: {export}: line 1: the header names no e-mail column"
        " (it has 'name', 'email_2', 'phone')\n"
    )
    assert await people(db) == []
    export.write_text("Email;Name\n", encoding="utf-8")
    empty = await amailer(
        "subscribers", "import", str(export), "--list", "lucid-news", env=environment(config)
    )
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.startswith("0 rows:")


async def test_duplicate_rows_are_counted_and_the_first_one_wins(
    config: dict[str, Any], db: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    export = tmp_path / "people.csv"
    export.write_text(
        "email,name,locale\n"
        "anna@example.pl,Anna Nowak,pl\n"
        "anna@EXAMPLE.PL,Anna again,en\n"
        "john@example.com,John,en\n"
        "anna@example.pl,Anna thrice,\n",
        encoding="utf-8",
    )
    result = await amailer(
        "subscribers", "import", str(export), "--list", "lucid-news", env=environment(config)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "4 rows: 2 subscribed, 0 already subscribed, 0 kept unsubscribed (they opted out), "
        "0 suppressed (bounced, complained or erased), 2 duplicate, 0 bad"
    )
    assert await people(db) == [
        ("anna@example.pl", "Anna Nowak", "pl", "subscribed"),
        ("john@example.com", "John", "en", "subscribed"),
    ]

    # A duplicate of a row in an earlier batch of the same import counts too.
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        subscribers = Subscribers(pool)
        list_id = (await subscribers.list_ids(["lucid-news"]))["lucid-news"]
        rows = [
            imported_person([f"p{n}@example.pl", "", "pl"], hash_key=HASH_KEY) for n in range(3)
        ]
        async with subscribers.importing(list_id) as importer:
            first = await importer.add(rows[:2])
            second = await importer.add([rows[1], rows[2], rows[2]])
        assert (first.added, first.duplicates) == (2, 0)
        assert (second.added, second.already_subscribed, second.duplicates) == (1, 0, 2)
        # the connection goes back to the pool without the import's table
        assert await pool.fetchval("SELECT to_regclass('pg_temp.import_seen')") is None
    finally:
        await pool.close()


async def test_excels_other_exports_utf16_and_a_workbook(
    config: dict[str, Any], db: asyncpg.Connection, tmp_path: Path
) -> None:
    unicode_text = tmp_path / "unicode.txt"  # Excel's "Unicode text": UTF-16 with BOM, tabs
    unicode_text.write_bytes(POLISH_ROWS.replace(";", "\t").encode("utf-16"))
    result = await amailer(
        "subscribers", "import", str(unicode_text), "--list", "lucid-news", env=environment(config)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("3 rows: 3 subscribed,")
    assert ("malgorzata@example.pl", "Małgorzata Łęcka", "pl", "subscribed") in await people(db)

    workbook = tmp_path / "people.xlsx"
    workbook.write_bytes(b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)) * 4)
    refused = await amailer(
        "subscribers", "import", str(workbook), "--list", "lucid-news", env=environment(config)
    )
    assert refused.returncode == 1
    assert refused.stderr == (
        f'mailer: {workbook}: a spreadsheet workbook (.xlsx), not CSV: save it as "CSV UTF-8"'
        " first\n"
    )


async def test_hostile_rows_are_bad_rows_and_the_rest_is_imported(
    config: dict[str, Any], db: asyncpg.Connection, tmp_path: Path
) -> None:
    export = tmp_path / "hostile.csv"
    export.write_text(
        "email,name,locale\n"
        "nul@example.pl,Nul\x00Name,pl\n"
        'crlf@example.pl,"Jan\r\nBcc: victim@example.com",pl\n'
        "sep@example.pl,Jan\u2028Kowalski,pl\n"
        f"huge@example.pl,{'x' * 200_000},pl\n"
        "fine@example.pl,Fine,en\n",
        encoding="utf-8",
    )
    result = await amailer(
        "subscribers", "import", str(export), "--list", "lucid-news", env=environment(config)
    )
    assert result.returncode == 1
    problems = result.stderr.splitlines()
    assert [line.split(":")[0] for line in problems] == ["line 2", "line 4", "line 5", "line 6"]
    assert "not CSV (field larger than field limit (131072))" in problems[3]
    assert "victim" not in result.stderr
    assert "Traceback" not in result.stderr
    assert await people(db) == [("fine@example.pl", "Fine", "en", "subscribed")]
