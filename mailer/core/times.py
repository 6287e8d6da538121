"""How a moment and a length of time read wherever an operator reads them, in the CLI and in
the console. A moment in UTC, to the second, `2026-12-07 11:51:21 UTC`; a length of time as
`42 s`, `2 min 5 s`, `12 min`, `1 h 6 min`. What machines read (JSON answers, `--json`)
keeps ISO 8601 and seconds instead."""

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


def duration(seconds: float) -> str:
    """A length of time to the second under ten minutes, to the minute past that, in hours and
    minutes from an hour on: what an ETA or a silence needs, and no more."""
    whole = max(0, round(seconds))
    minutes, rest = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes >= 10 or (minutes and not rest):
        return f"{minutes} min"
    if minutes:
        return f"{minutes} min {rest} s"
    return f"{rest} s"
