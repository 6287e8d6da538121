"""`mailer subscribers import FILE.csv --list SLUG`: people whose consent is already held.

The file is read as a stream (a million rows never sit in memory) in batches that go to
PostgreSQL with COPY. A bad row is reported with its line number and skipped; the rest go on.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from mailer.adapters.subscribers import ImportCounts, Subscribers
from mailer.core.audience import ImportedPerson, imported_person

BATCH = 10_000


@dataclass
class ImportReport:
    rows: int = 0
    bad: int = 0
    added: int = 0
    already_subscribed: int = 0
    kept_unsubscribed: int = 0
    suppressed: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, counts: ImportCounts) -> None:
        self.added += counts.added
        self.already_subscribed += counts.already_subscribed
        self.kept_unsubscribed += counts.kept_unsubscribed
        self.suppressed += counts.suppressed

    def summary(self) -> str:
        return (
            f"{self.rows} rows: {self.added} subscribed, {self.already_subscribed} already "
            f"subscribed, {self.kept_unsubscribed} kept unsubscribed (they opted out), "
            f"{self.suppressed} suppressed (bounced, complained or erased), {self.bad} bad"
        )


def _rows(handle: TextIO) -> Iterator[tuple[int, list[str]]]:
    sample = handle.read(4096)
    handle.seek(0)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(handle, dialect)
    for fields in reader:
        if not fields or not any(part.strip() for part in fields):
            continue
        if reader.line_num == 1 and fields[0].strip().lower() in ("email", "e-mail", "adres"):
            continue  # a header row
        yield reader.line_num, fields


async def import_file(
    path: Path,
    *,
    list_id: int,
    subscribers: Subscribers,
    hash_key: bytes,
    errors: TextIO = sys.stderr,
) -> ImportReport:
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
        handle = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        batch: list[ImportedPerson] = []
        for line, fields in _rows(handle):
            report.rows += 1
            try:
                batch.append(imported_person(fields, hash_key=hash_key))
            except ValueError as exc:
                report.bad += 1
                print(f"line {line}: {exc}", file=errors)
            if len(batch) >= BATCH:
                report.add(await subscribers.import_rows(list_id, batch))
                batch = []
                progress.update(raw.tell() - progress.n)
        if batch:
            report.add(await subscribers.import_rows(list_id, batch))
        progress.update(size - progress.n)
    return report
