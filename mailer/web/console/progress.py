"""Counts by outcome for the issues a page shows, shared by every page: an issue still
going is counted again at most every LIVE_SECONDS, a finished one once (its counts no longer
change). Each count says when it was taken; a page's time is that of its oldest part.

Rates and ETAs are those of mailer/core/progress.py, in the words of `mailer issue status`."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from mailer.adapters.ledger_views import IssueSummary
from mailer.core.issues import ENDED
from mailer.core.progress import Estimate, LedgerFacts, describe, estimate
from mailer.web.console.cache import LIVE_SECONDS
from mailer.web.console.context import Console

ENDED_SECONDS = 24 * 3600.0
Counted = tuple[datetime, dict[str, int]]


async def with_counts(
    console: Console, issues: list[IssueSummary]
) -> tuple[list[IssueSummary], datetime | None]:
    """The issues with their counts, and when the oldest count of an unfinished one was taken."""

    def reader(issue: IssueSummary) -> Callable[[], Awaitable[Counted]]:
        async def read() -> Counted:
            counts = await console.views.counts([issue.id])
            return datetime.now(UTC), counts.get(issue.id, {})

        return read

    found = await asyncio.gather(
        *(
            console.fresh.get(
                f"counts {issue.id}",
                ENDED_SECONDS
                if issue.state in ENDED and issue.finished_at is not None
                else LIVE_SECONDS,
                reader(issue),
            )
            for issue in issues
        )
    )
    oldest = min(
        (at for issue, (at, _) in zip(issues, found, strict=True) if issue.state not in ENDED),
        default=None,
    )
    counted = [
        dataclasses.replace(issue, counts=counts)
        for issue, (_, counts) in zip(issues, found, strict=True)
    ]
    return counted, oldest


@dataclasses.dataclass(frozen=True, slots=True)
class Rated:
    """An issue with its rate and ETA, as `mailer issue status` tells them."""

    issue: IssueSummary
    estimate: Estimate
    last_sent_at: datetime | None
    measured_at: datetime

    @property
    def said(self) -> str:
        return describe(self.estimate)


async def rated(
    console: Console, issues: list[IssueSummary], now: datetime, *, last_sent: bool = False
) -> list[Rated]:
    """Each issue's estimate from the ledger; only the issues sending are read again (the
    others have no rate to tell), and, with `last_sent`, any that started, for the time of
    their newest send (a finished issue's once: it no longer changes)."""

    async def read(issue: IssueSummary) -> LedgerFacts:
        # Shared by the pages that show it, like its counts; a finished issue's, once.
        finished = issue.state in ENDED and issue.finished_at is not None
        return await console.fresh.get(
            f"facts {issue.id} {issue.state}",
            ENDED_SECONDS if finished else LIVE_SECONDS,
            lambda: console.views.facts(issue),
        )

    async def one(issue: IssueSummary) -> Rated:
        if issue.state == "sending":
            facts = await read(issue)
        else:
            newest = None
            if last_sent and issue.started_at is not None:
                newest = (await read(issue)).last_sent_at
            facts = LedgerFacts(
                state=issue.state,
                total=issue.total,
                counts=issue.counts,
                measured_at=now,
                started_at=issue.started_at,
                finished_at=issue.finished_at,
                sent_in_window=0,
                last_sent_at=newest,
                next_retry_at=None,
                workers_alive=None,
            )
        return Rated(issue, estimate(facts), facts.last_sent_at, facts.measured_at)

    return list(await asyncio.gather(*(one(issue) for issue in issues)))
