"""How a moment and a length of time read wherever an operator reads them, in the CLI and in
the console. A moment in UTC, to the second, `2026-12-07 11:51:21 UTC`; a length of time as
`42 s`, `2 min 5 s`, `12 min`, `1 h 6 min`. What machines read (JSON answers, `--json`)
keeps ISO 8601 and seconds instead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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


_AGO = {"s": 1, "min": 60, "m": 60, "h": 3600, "d": 86400}


def typed_moment(text: str, now: datetime) -> datetime:
    """A moment an operator typed: ISO 8601 (`2026-12-07`, `2026-12-07T10:15`,
    `2026-12-07 10:15:00 UTC`, with `Z` or an offset; without one it is UTC, as every time
    mailer shows is), or a length of time ago (`90s`, `15min`, `2h`, `7d`). ValueError
    naming what it takes otherwise."""
    typed = text.strip()
    for unit in sorted(_AGO, key=len, reverse=True):
        number = typed.removesuffix(unit).strip()
        if typed.endswith(unit) and number.replace(".", "", 1).isdigit():
            return now - timedelta(seconds=float(number) * _AGO[unit])
    iso = typed.removesuffix(" UTC").replace("Z", "+00:00")
    try:
        at = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give 2026-12-07, 2026-12-07T10:15 (UTC unless an offset"
            " follows), or a time ago such as 2h or 7d"
        ) from None
    return at if at.utcoffset() is not None else at.replace(tzinfo=UTC)
