"""How a moment reads wherever an operator reads one, in the CLI and in the console: in UTC,
to the second, `2026-12-07 11:51:21 UTC`. What machines read (JSON answers, `--json`) keeps
ISO 8601 instead."""

from __future__ import annotations

from datetime import UTC, datetime

WIDTH = len("2026-12-07 11:51:21 UTC")  # for the columns of a table


def when(at: datetime | None, absent: str = "-") -> str:
    """The moment as operators read it; `absent` for none. A moment without a time zone is
    refused: it would be read as this machine's local time."""
    if at is None:
        return absent
    if at.utcoffset() is None:
        raise ValueError(f"{at!r} has no time zone")
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
