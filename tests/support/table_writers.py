"""Who writes which table: every INSERT, UPDATE, DELETE, TRUNCATE, MERGE and COPY … FROM in
the SQL of `mailer/` (the strings of its Python modules and its repeatable `.sql` files;
numbered migrations excluded), and the owners `docs/architecture.md` names.

A write is counted where its statement is written: in a Python module, or in a SQL function
file, which counts as part of the module the ownership table names for it. A SQL function
that calls another owner's function makes a deliberate call, not a write of its own.

`python -m tests.support.table_writers` prints the writes per table per module.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "mailer"
MIGRATIONS = PACKAGE / "adapters" / "migrations"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
SECTION = "## Tables and their owners"

PLACEHOLDER = "{…}"  # an f-string's value: a table named there is not spelled out
_NAME = r"(?:ONLY\s+)?(?P<table>(?:\w+\.)?\w+|\{…\})"
_WRITES = re.compile(
    r"\b(?P<verb>INSERT\s+INTO|DELETE\s+FROM|MERGE\s+INTO|UPDATE)\s+"
    + _NAME
    + r"|\b(?P<truncate>TRUNCATE)\s+(?:TABLE\s+)?(?P<tables>[\w.{}…]+(?:\s*,\s*[\w.{}…]+)*)"
    + r"|\b(?P<copy>COPY)\s+(?P<copied>(?:\w+\.)?\w+|\{…\})\s*(?:\([^)]*\))?\s*FROM\b",
    re.IGNORECASE,
)
# UPDATE as part of another clause: FOR [NO KEY] UPDATE, ON CONFLICT … DO UPDATE, ON UPDATE.
_NOT_A_STATEMENT = {"for", "key", "do", "on"}
_PREVIOUS_WORD = re.compile(r"(\w+)\s*$")
_CREATE_TABLE = re.compile(
    r"\bCREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.IGNORECASE
)
_CREATE_TEMPORARY = re.compile(
    r"\bCREATE\s+(?:TEMPORARY|TEMP)\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.IGNORECASE
)
_CREATE_FUNCTION = re.compile(
    r"\bCREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+(\w+)\s*\(", re.IGNORECASE
)
_COMMENT = re.compile(r"--[^\n]*")
_COPY_CALLS = {"copy_records_to_table", "copy_to_table"}


@dataclass(frozen=True, slots=True)
class Write:
    table: str
    module: str  # the path under the project root, e.g. mailer/adapters/deliveries.py
    where: str  # path:line (a Python string) or path:function (a SQL function)
    verb: str


@dataclass(frozen=True, slots=True)
class Owner:
    table: str
    module: str
    sql_files: tuple[str, ...]


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def statements(text: str) -> Iterator[tuple[str, str]]:
    """(verb, table) of every write in a piece of SQL."""
    text = _COMMENT.sub("", text)
    for match in _WRITES.finditer(text):
        if match["verb"]:
            verb = " ".join(match["verb"].upper().split())
            if verb == "UPDATE":
                previous = _PREVIOUS_WORD.search(text, 0, match.start())
                if previous and previous[1].lower() in _NOT_A_STATEMENT:
                    continue
            yield verb.split()[0], match["table"]
        elif match["truncate"]:
            for table in match["tables"].split(","):
                yield "TRUNCATE", table.strip()
        else:
            yield "COPY", match["copied"]


def _table(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower()


def _python_strings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, text) of every string that is not a docstring; an f-string with its values
    as placeholders."""
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    inside_fstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                inside_fstrings.add(id(value))
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    parts.append(value.value)
                else:
                    parts.append(PLACEHOLDER)
            yield node.lineno, "".join(parts)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and id(node) not in inside_fstrings
        ):
            yield node.lineno, node.value


def _copy_calls(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """asyncpg's COPY into a table: `conn.copy_records_to_table("name", …)`."""
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _COPY_CALLS
        ):
            continue
        named = node.args[0] if node.args else None
        for keyword in node.keywords:
            if keyword.arg == "table_name":
                named = keyword.value
        if isinstance(named, ast.Constant) and isinstance(named.value, str):
            yield node.lineno, named.value
        else:
            yield node.lineno, PLACEHOLDER


def _sql_functions(text: str) -> Iterator[tuple[str, str]]:
    """(function, its text) of a SQL file; what precedes the first function as ''."""
    starts = list(_CREATE_FUNCTION.finditer(text))
    yield "", text[: starts[0].start()] if starts else text
    for i, start in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        yield start[1], text[start.start() : end]


def sources() -> Iterator[Path]:
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix in (".py", ".sql") and MIGRATIONS not in path.parents:
            yield path


def owners(text: str | None = None) -> list[Owner]:
    """The rows of the table under "Tables and their owners" in docs/architecture.md:
    | `table` | `mailer/…/module.py` | `mailer/…/x.sql` … |."""
    if text is None:
        text = ARCHITECTURE.read_text(encoding="utf-8")
    _, found, after = text.partition(SECTION + "\n")
    if not found:
        raise LookupError(f"{_relative(ARCHITECTURE)} has no section {SECTION!r}")
    section = re.split(r"\n## ", after, maxsplit=1)[0]
    rows: list[Owner] = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2:
            continue
        table = re.fullmatch(r"`(\w+)`", cells[0])
        module = re.fullmatch(r"`(mailer/[\w/]+\.py)`", cells[1])
        if table and module:
            sql = tuple(re.findall(r"`(mailer/[\w/]+\.sql)`", cells[2] if len(cells) > 2 else ""))
            rows.append(Owner(table[1], module[1], sql))
    return rows


def schema_tables() -> set[str]:
    """Every table the migrations (and the migration runner) create."""
    found: set[str] = set()
    for path in [*MIGRATIONS.glob("*.sql"), PACKAGE / "adapters" / "database.py"]:
        found.update(_table(name) for name in _CREATE_TABLE.findall(path.read_text("utf-8")))
    return found


def python_writes(text: str, relative: str) -> Iterator[tuple[str, str, str]]:
    """(where, verb, table as written) of every write in a Python module's strings and its
    asyncpg COPY calls."""
    tree = ast.parse(text, relative)
    for line, piece in _python_strings(tree):
        for verb, name in statements(piece):
            yield f"{relative}:{line}", verb, name
    for line, name in _copy_calls(tree):
        yield f"{relative}:{line}", "COPY", name


def sql_writes(text: str, relative: str) -> Iterator[tuple[str, str, str]]:
    """(where, verb, table as written) of every write in a SQL file, by function."""
    for function, body in _sql_functions(text):
        for verb, name in statements(body):
            yield f"{relative}:{function or '(top)'}", verb, name


def _sql_owners() -> dict[str, str]:
    return {sql: owner.module for owner in owners() for sql in owner.sql_files}


def writes(sql_owners: dict[str, str] | None = None) -> list[Write]:
    """Every write in mailer/ to a table of the schema (or to a table not spelled out:
    PLACEHOLDER), each attributed to its module; a SQL file to the module that owns it in
    `sql_owners` (path → module; by default as docs/architecture.md says), else to itself."""
    if sql_owners is None:
        sql_owners = _sql_owners()
    tables = schema_tables()
    found: list[Write] = []
    for path in sources():
        relative = _relative(path)
        text = path.read_text(encoding="utf-8")
        temporary = {_table(name) for name in _CREATE_TEMPORARY.findall(text)}
        if path.suffix == ".py":
            module, pieces = relative, python_writes(text, relative)
        else:
            module, pieces = sql_owners.get(relative, relative), sql_writes(text, relative)
        for where, verb, name in pieces:
            table = name if name == PLACEHOLDER else _table(name)
            if table == PLACEHOLDER or (table in tables and table not in temporary):
                found.append(Write(table, module, where, verb))
    return found


def _defined_functions(sql_owners: dict[str, str]) -> dict[str, str]:
    """Every function of the repeatable SQL files, with the module that owns its file."""
    defined: dict[str, str] = {}
    for path in sources():
        if path.suffix == ".sql":
            relative = _relative(path)
            for name, _ in _sql_functions(path.read_text(encoding="utf-8")):
                if name:
                    defined[name.lower()] = sql_owners.get(relative, relative)
    return defined


def _called(text: str, defined: dict[str, str]) -> set[str]:
    return {
        name.lower()
        for name in re.findall(r"\b(\w+)\s*\(", _COMMENT.sub("", text))
        if name.lower() in defined
    }


def cross_owner_calls(sql_owners: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(caller, callee) of every call from one owner's SQL function to another owner's."""
    if sql_owners is None:
        sql_owners = _sql_owners()
    defined = _defined_functions(sql_owners)
    calls: set[tuple[str, str]] = set()
    for path in sources():
        if path.suffix != ".sql":
            continue
        for name, body in _sql_functions(path.read_text(encoding="utf-8")):
            if not name:
                continue
            for callee in _called(body, defined) - {name.lower()}:
                if defined[callee] != defined[name.lower()]:
                    calls.add((name.lower(), callee))
    return sorted(calls)


def sql_function_callers(sql_owners: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(function, the module whose SQL file defines it, a Python module that calls it) for
    every call of a repeatable SQL function from Python."""
    if sql_owners is None:
        sql_owners = _sql_owners()
    defined = _defined_functions(sql_owners)
    calls: set[tuple[str, str, str]] = set()
    for path in sources():
        if path.suffix != ".py":
            continue
        relative = _relative(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), relative)
        for _, text in _python_strings(tree):
            calls.update((name, defined[name], relative) for name in _called(text, defined))
    return sorted(calls)


def table_of_writers(found: list[Write]) -> str:
    """Writes per table per module, a line each; tables with more than one module marked."""
    per: Counter[tuple[str, str]] = Counter((w.table, w.module) for w in found)
    lines = [f"{'TABLE':24}  {'WRITES':>6}  MODULE"]
    for table in sorted({t for t, _ in per}):
        modules = sorted(m for t, m in per if t == table)
        mark = f"   ({len(modules)} writers)" if len(modules) > 1 else ""
        for i, module in enumerate(modules):
            lines.append(
                f"{table if i == 0 else '':24}  {per[table, module]:>6}  {module}"
                + (mark if i == 0 else "")
            )
    tables = {t for t, _ in per}
    several = sum(1 for t in tables if len({m for tt, m in per if tt == t}) > 1)
    lines.append(f"{len(tables)} tables written, {several} by more than one module")
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        attributed = _sql_owners()
    except (LookupError, OSError):
        attributed = {}  # no ownership table yet: each SQL file counts as a module of its own
    print(table_of_writers(writes(attributed)))
    sys.exit(0)
