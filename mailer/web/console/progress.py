"""Issues with their rate and ETA, for every page that shows them, in the words of `mailer
issue status` (mailer/core/progress.py).

Each issue comes with its counts (mailer/adapters/issues.py: a finished issue's as stored,
an active one's counted as it is read). What an active issue's rate is estimated from is
read at most every LIVE_SECONDS, shared by the pages that show it; a finished issue needs no
reading at all: its newest send is stored with its counts."""

from __future__ import annotations

import asyncio

from mailer.adapters.issues import IssueSummary, Progress
from mailer.web.console.cache import LIVE_SECONDS
from mailer.web.console.context import Console


async def rated(
    console: Console, issues: list[IssueSummary], *, newest_send: bool = False
) -> list[Progress]:
    """Each issue with its estimate; with `newest_send`, an unfinished issue that started is
    read for the time of its newest send even when it is not sending."""

    async def one(issue: IssueSummary) -> Progress:
        if issue.final:
            return Progress(issue, await console.issues.facts(issue))
        facts = await console.fresh.get(
            f"facts {issue.id} {issue.state} {newest_send}",
            LIVE_SECONDS,
            lambda: console.issues.facts(issue, newest_send=newest_send),
        )
        return Progress(issue, facts)

    return list(await asyncio.gather(*(one(issue) for issue in issues)))
