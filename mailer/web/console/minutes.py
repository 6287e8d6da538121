"""The overview chart's counts: the whole hour read once, then only the last two minutes on
each refresh, the minutes before kept. While mail flows the hour holds up to millions of
rows (2.5 million at 700 a second), and reading all of them every refresh cost more than
anything else the console does.

A row recorded again later (sent, then bounced) is counted in the minute of each recording,
as an event would be: the earlier minutes are not read again."""

from __future__ import annotations

from datetime import datetime, timedelta

from mailer.adapters.ledger_views import LedgerViews, MinuteCount

MINUTES = 60
REREAD = timedelta(minutes=1)  # the minute before the open one, for rows committed late
FULL_AFTER = timedelta(minutes=5)  # unread for this long: read the whole hour again


class MinuteCounts:
    def __init__(self, views: LedgerViews, minutes: int = MINUTES) -> None:
        self._views = views
        self._minutes = minutes
        self._kept: list[MinuteCount] = []
        self._read_at: datetime | None = None

    async def read(self) -> tuple[datetime, list[MinuteCount]]:
        """(when measured, by the database's clock; the counts per minute of the last hour)."""
        now = await self._views.now()
        minute = now.replace(second=0, microsecond=0)
        if self._read_at is None or now - self._read_at > FULL_AFTER:
            self._kept = await self._views.sends_per_minute(self._minutes)
        else:
            since = self._read_at.replace(second=0, microsecond=0) - REREAD
            fresh = await self._views.sends_per_minute(self._minutes, since=since)
            self._kept = [c for c in self._kept if c.minute < since] + fresh
        self._read_at = now
        oldest = minute - timedelta(minutes=self._minutes - 1)
        self._kept = [c for c in self._kept if c.minute >= oldest]
        return now, list(self._kept)
