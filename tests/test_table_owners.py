"""One writer per table: the SQL in mailer/ against the owners docs/architecture.md names."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import table_writers as scan

SQL_FOLDER = scan.PACKAGE / "adapters" / "sql"


def test_every_table_has_one_owner_named_in_the_architecture() -> None:
    owners = scan.owners()
    named = [owner.table for owner in owners]
    repeated = sorted({table for table in named if named.count(table) > 1})
    assert not repeated, f"tables named more than once: {repeated}"
    tables = scan.schema_tables()
    assert sorted(tables - set(named)) == [], "tables without an owner in docs/architecture.md"
    assert sorted(set(named) - tables) == [], "owners named for tables the schema lacks"
    for owner in owners:
        assert (scan.ROOT / owner.module).is_file(), owner
        for sql in owner.sql_files:
            assert (scan.ROOT / sql).is_file(), owner


def test_every_sql_function_file_belongs_to_one_owner() -> None:
    claimed: dict[str, set[str]] = {}
    for owner in scan.owners():
        for sql in owner.sql_files:
            claimed.setdefault(sql, set()).add(owner.module)
    files = {path.relative_to(scan.ROOT).as_posix() for path in SQL_FOLDER.glob("*.sql")}
    assert sorted(files - set(claimed)) == [], "SQL files no owner claims"
    assert {sql: modules for sql, modules in claimed.items() if len(modules) > 1} == {}


def test_each_table_is_written_by_its_owner_alone() -> None:
    owner_of = {owner.table: owner.module for owner in scan.owners()}
    found = scan.writes()
    unnamed = [w.where for w in found if w.table == scan.PLACEHOLDER]
    assert unnamed == [], "writes to a table whose name is not spelled out in the SQL"
    strangers = sorted(
        f"{w.where}: {w.verb} {w.table} (its owner is {owner_of.get(w.table)})"
        for w in found
        if owner_of.get(w.table) != w.module
    )
    assert strangers == [], "tables written by a module that does not own them:\n" + "\n".join(
        strangers
    )
    assert found, "the scan found no writes at all: it reads nothing"


def test_an_owners_sql_functions_are_called_from_python_by_that_owner_alone() -> None:
    strangers = [
        f"{caller} calls {function}() of {owner}"
        for function, owner, caller in scan.sql_function_callers()
        if caller != owner
    ]
    assert strangers == []


def test_every_call_from_one_owners_sql_to_anothers_is_listed() -> None:
    listed = scan.ARCHITECTURE.read_text(encoding="utf-8")
    calls = scan.cross_owner_calls()
    unlisted = [
        f"{caller}() → {callee}()"
        for caller, callee in calls
        if f"`{caller}` → `{callee}`" not in listed
    ]
    assert unlisted == [], "calls between owners' SQL functions missing in docs/architecture.md"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("UPDATE deliveries SET status = 'x'", [("UPDATE", "deliveries")]),
        ("SELECT 1 FROM issues WHERE id = $1 FOR UPDATE", []),
        ("SELECT 1 FROM issues FOR NO KEY UPDATE", []),
        (
            "INSERT INTO jobs (id) VALUES ($1) ON CONFLICT (id) DO UPDATE SET id = $1",
            [("INSERT", "jobs")],
        ),
        (
            "WITH d AS (DELETE FROM public.throttle_slots RETURNING 1) SELECT 1",
            [("DELETE", "public.throttle_slots")],
        ),
        ("truncate table workers, operators", [("TRUNCATE", "workers"), ("TRUNCATE", "operators")]),
        ("MERGE INTO lists l USING x ON true", [("MERGE", "lists")]),
        ("COPY subscribers (email) FROM STDIN", [("COPY", "subscribers")]),
        ("COPY (SELECT 1) TO STDOUT", []),
        ("SELECT 1 -- UPDATE deliveries SET x = 1", []),
    ],
)
def test_the_scan_finds_writes_and_only_writes(sql: str, expected: list[tuple[str, str]]) -> None:
    assert list(scan.statements(sql)) == expected


def test_the_scan_sees_a_stray_write_in_python(tmp_path: Path) -> None:
    """The fault the scan exists for: a module that is not the owner writes a table."""
    stray = tmp_path / "stray.py"
    stray.write_text(
        '"""UPDATE deliveries in a docstring is prose."""\n'
        "async def f(conn, table):\n"
        '    await conn.execute("UPDATE deliveries SET status = $1", "x")\n'
        '    await conn.execute(f"DELETE FROM {table}")\n'
        '    await conn.copy_records_to_table("suppressions", records=[])\n',
        encoding="utf-8",
    )
    found = list(scan.python_writes(stray.read_text(encoding="utf-8"), "stray.py"))
    assert sorted((where, verb, table) for where, verb, table in found) == [
        ("stray.py:3", "UPDATE", "deliveries"),
        ("stray.py:4", "DELETE", scan.PLACEHOLDER),
        ("stray.py:5", "COPY", "suppressions"),
    ]
