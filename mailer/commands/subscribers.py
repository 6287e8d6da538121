"""`mailer subscribers import FILE.csv --list SLUG`: people whose consent is already held
(`mailer subscribers show`, one person as mailer knows them, is in person.py).

The file is read as a stream (a million rows never sit in memory) in batches that go to
PostgreSQL with COPY. A bad row is reported with its line number and skipped; the rest go on.
With a header row, columns are found by their names; without one they are email, name,
locale in that order.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import io
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import asyncpg
from tqdm import tqdm

from mailer.adapters.subscribers import ImportCounts, Subscribers
from mailer.commands import person
from mailer.commands.running import Subcommands, address_hash_key, runs_async, with_database
from mailer.config import Settings
from mailer.core.audience import ImportedPerson, imported_person
from mailer.errors import ConfigError, MailerError

BATCH = 10_000


def add_parser(commands: Subcommands) -> None:
    subscribers = commands.add_parser("subscribers", help="newsletter subscribers")
    actions = subscribers.add_subparsers(
        dest="subscribers_command", required=True, metavar="ACTION"
    )
    importing = actions.add_parser(
        "import",
        help="subscribe the people in a CSV file (email, name, locale) whose "
        "consent is already held",
    )
    importing.add_argument("file", type=Path)
    importing.add_argument("--list", required=True, dest="list_slug", metavar="SLUG")
    importing.add_argument(
        "--encoding",
        default="utf-8",
        help="the file's character set (default utf-8; a Polish Excel export is often cp1250)",
    )
    runs_async(importing, import_subscribers)
    person.add_parser(actions)


async def import_subscribers(args: argparse.Namespace, settings: Settings) -> int:
    """Checked before the database is opened: the list, the file, its character set."""
    if args.list_slug not in settings.lists:
        raise ConfigError(f"no list {args.list_slug!r} in the configuration ([lists.<slug>])")
    path: Path = args.file
    if not path.is_file():  # noqa: ASYNC240 - before any I/O starts
        raise MailerError(f"{path}: no such file")
    try:
        codecs.lookup(args.encoding)
    except LookupError:
        raise ConfigError(f"--encoding: no such character set {args.encoding!r}") from None
    hash_key = address_hash_key(settings)

    async def run(pool: asyncpg.Pool) -> int:
        subscribers = Subscribers(pool)
        list_id = (await subscribers.list_ids([args.list_slug]))[args.list_slug]
        try:
            report = await import_file(
                path,
                list_id=list_id,
                subscribers=subscribers,
                hash_key=hash_key,
                encoding=args.encoding,
            )
        except BadFile as exc:
            raise MailerError(f"{path}: {exc}") from None
        print(report.summary())
        return 1 if report.bad else 0

    return await with_database(settings, run)


# Header names (compared lower-case, without spaces, dashes or underscores), as Polish and
# English spreadsheets and mailing-list exports spell them.
COLUMNS: dict[str, tuple[str, ...]] = {
    "email": ("email", "mail", "emailaddress", "adres", "adresemail", "adresmailowy"),
    "name": ("name", "fullname", "imięinazwisko", "imieinazwisko", "nazwa", "osoba"),
    "first_name": ("firstname", "givenname", "imię", "imie"),
    "last_name": ("lastname", "surname", "familyname", "nazwisko"),
    "locale": ("locale", "language", "lang", "język", "jezyk"),
}
_ALIASES = {alias: column for column, aliases in COLUMNS.items() for alias in aliases}
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


class BadFile(ValueError):
    """The file as a whole cannot be imported (its header names no e-mail column)."""


@dataclass
class ImportReport:
    rows: int = 0
    bad: int = 0
    added: int = 0
    already_subscribed: int = 0
    kept_unsubscribed: int = 0
    suppressed: int = 0
    duplicates: int = 0

    def add(self, counts: ImportCounts) -> None:
        self.added += counts.added
        self.already_subscribed += counts.already_subscribed
        self.kept_unsubscribed += counts.kept_unsubscribed
        self.suppressed += counts.suppressed
        self.duplicates += counts.duplicates

    def summary(self) -> str:
        return (
            f"{self.rows} rows: {self.added} subscribed, {self.already_subscribed} already "
            f"subscribed, {self.kept_unsubscribed} kept unsubscribed (they opted out), "
            f"{self.suppressed} suppressed (bounced, complained or erased), "
            f"{self.duplicates} duplicate, {self.bad} bad"
        )


def _header_key(text: str) -> str:
    return re.sub(r"[\s_.-]+", "", text.strip().lower())


class Columns:
    """Where email, name and locale are in a row: by the header's names, else in that order."""

    def __init__(self, header: list[str] | None) -> None:
        self.by_name = header is not None
        self._at: dict[str, int] = {}
        if header is not None:
            for index, text in enumerate(header):
                column = _ALIASES.get(_header_key(text))
                if column is not None and column not in self._at:
                    self._at[column] = index
            if "email" not in self._at:
                shown = ", ".join(repr(text.strip()[:40]) for text in header[:10])
                raise BadFile(f"line 1: the header names no e-mail column (it has {shown})")

    @staticmethod
    def is_header(fields: list[str]) -> bool:
        """No address in it, and a name we know: email, name, Imię, Nazwisko, Język, …"""
        return "@" not in "".join(fields) and any(_header_key(text) in _ALIASES for text in fields)

    def pick(self, fields: list[str]) -> list[str]:
        """The row as [email, name, locale] for imported_person."""
        if not self.by_name:
            return fields

        def cell(column: str) -> str:
            index = self._at.get(column)
            return fields[index] if index is not None and index < len(fields) else ""

        name = cell("name").strip() or " ".join(
            part for part in (cell("first_name").strip(), cell("last_name").strip()) if part
        )
        return [cell("email"), name, cell("locale")]


def _rows(handle: TextIO) -> Iterator[tuple[int, list[str] | str, Columns]]:
    """(line, fields or what is wrong with the line, columns) for every row but a header."""
    sample = handle.read(4096)
    handle.seek(0)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(handle, dialect)
    columns = Columns(None)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # a NUL byte, a field over csv.field_size_limit()
            yield reader.line_num, f"not CSV ({exc})", columns
            continue
        if not fields or not any(part.strip() for part in fields):
            continue
        if reader.line_num == 1 and Columns.is_header(fields):
            columns = Columns(fields)
            continue
        yield reader.line_num, fields, columns


def _codec(start: bytes, encoding: str) -> str:
    """The codec to read with: a UTF-16 file (Excel's "Unicode text") is known by its BOM,
    a workbook is refused with what to do instead."""
    if start.startswith(b"PK\x03\x04"):
        raise BadFile('a spreadsheet workbook (.xlsx), not CSV: save it as "CSV UTF-8" first')
    if codecs.lookup(encoding).name != "utf-8":
        return encoding
    if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return "utf-8-sig"


def _undecodable(fields: list[str], encoding: str) -> str | None:
    """What to say of a row with bytes that are not in the file's encoding, else None."""
    for number, text in enumerate(fields, start=1):
        found = _NOT_UTF8.search(text)
        if found is not None:
            byte = ord(found.group()) - 0xDC00
            hint = " (an Excel export? try --encoding cp1250)" if encoding == "utf-8" else ""
            return f"column {number} is not {encoding}: byte 0x{byte:02x}{hint}"
    return None


async def import_file(
    path: Path,
    *,
    list_id: int,
    subscribers: Subscribers,
    hash_key: bytes,
    encoding: str = "utf-8",
    errors: TextIO = sys.stderr,
) -> ImportReport:
    """Import what is valid; every bad row is named by its line on `errors` and counted.
    BadFile if the file cannot be read at all."""
    report = ImportReport()
    size = path.stat().st_size  # noqa: ASYNC240 - a command: nothing else runs meanwhile
    with (
        path.open("rb") as raw,
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc="importing",
            file=errors,
            disable=not errors.isatty(),
            leave=False,
        ) as progress,
    ):
        # Bytes the encoding does not have become lone surrogates, so that one bad line is
        # reported and skipped while the rest of the file is imported.
        codec = _codec(raw.read(4), encoding)
        raw.seek(0)
        if codec == "utf-16":
            encoding = codec
        handle = io.TextIOWrapper(raw, encoding=codec, errors="surrogateescape", newline="")
        async with subscribers.importing(list_id) as importer:
            batch: list[ImportedPerson] = []
            for line, fields, columns in _rows(handle):
                report.rows += 1
                try:
                    if isinstance(fields, str):
                        raise ValueError(fields)
                    problem = _undecodable(fields, encoding)
                    if problem is not None:
                        raise ValueError(problem)
                    batch.append(imported_person(columns.pick(fields), hash_key=hash_key))
                except ValueError as exc:
                    report.bad += 1
                    print(f"line {line}: {exc}", file=errors)
                if len(batch) >= BATCH:
                    report.add(await importer.add(batch))
                    batch = []
                    progress.update(raw.tell() - progress.n)
            if batch:
                report.add(await importer.add(batch))
        progress.update(size - progress.n)
    return report
