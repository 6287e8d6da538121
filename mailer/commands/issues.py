"""`mailer issue list|status|pause|resume|cancel`: what an operator sees and does."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Literal, TextIO
from uuid import UUID

from tqdm import tqdm

from mailer.adapters.issues import Issues, IssueSummary, Progress
from mailer.core import progress as core
from mailer.core.terminal import one_line
from mailer.core.times import WIDTH, when

FINAL_STATES = ("done", "cancelled")
# tqdm's own rate and ETA come from what this viewer saw change, which is everything at once
# when it starts mid-issue: the bar shows the ledger's rate instead.
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}{postfix}"


def describe(progress: Progress) -> str:
    counts = progress.counts
    total = progress.total if progress.total is not None else sum(counts.values())
    lines = [f"issue {progress.issue_id} (list {progress.list_slug}): {progress.state}"]
    if progress.state == "scheduled":
        lines.append(f"  starts at {when(progress.send_at)}")
    shown = "   ".join(f"{status} {n}" for status, n in core.counted(counts))
    lines.append(f"  total {total}   {shown}")
    if progress.state == "sending":
        lines.append(f"  {core.describe(progress.estimate) or 'nothing left to send'}")
    elif progress.finished_at is not None:
        lines.append(f"  finished at {when(progress.finished_at)}")
    lines.append(f"  measured at {when(progress.measured_at)}")
    return "\n".join(lines)


def status_line(progress: Progress) -> str:
    """The bar's postfix: the state, and the rate or why there is none."""
    detail = core.describe(progress.estimate) if progress.state == "sending" else ""
    return f"{progress.state}, {detail}" if detail else progress.state


async def watch(
    issues: Issues, issue_id: UUID, out: TextIO = sys.stderr, interval: float = 1.0
) -> Progress | None:
    """A live progress bar until the issue is done or cancelled."""
    progress = await issues.progress(issue_id)
    if progress is None:
        return None
    first = progress.estimate
    with tqdm(
        total=progress.total or 0,
        initial=first.done,
        unit="msg",
        file=out,
        desc=str(issue_id)[:8],
        bar_format=BAR_FORMAT,
    ) as bar:
        while True:
            bar.total = progress.total or 0
            bar.n = progress.estimate.done
            bar.set_postfix_str(status_line(progress), refresh=False)
            bar.refresh()
            if progress.state in FINAL_STATES:
                break
            await asyncio.sleep(interval)
            latest = await issues.progress(issue_id)
            assert latest is not None
            progress = latest
    return progress


def issue_rows(summaries: list[IssueSummary], *, as_json: bool) -> list[str]:
    """`mailer issue list`: newest first, one line each; the subject in the list's default
    locale, in JSON as the job gave it."""
    if as_json:
        return [
            json.dumps(
                {
                    "id": str(s.id),
                    "state": s.state,
                    "list": s.list_slug,
                    "subject": s.subjects,
                    "created_at": s.created_at.isoformat(),
                    "started_at": s.started_at.isoformat() if s.started_at else None,
                    "finished_at": s.finished_at.isoformat() if s.finished_at else None,
                    "total": s.total,
                    "counts": s.counts,
                },
                ensure_ascii=False,
            )
            for s in summaries
        ]
    counted = [*core.OUTCOMES, "left"]
    widths = {name: max(len(name), 7) for name in counted}
    header = (
        f"{'ISSUE':36}  {'STATE':9}  {'LIST':16}  {'CREATED':{WIDTH}}  {'STARTED':{WIDTH}}  "
        f"{'FINISHED':{WIDTH}}  {'TOTAL':>7}  "
        + "".join(f"{name.upper():>{widths[name]}}  " for name in counted)
        + "SUBJECT"
    )
    lines = [header]
    for s in summaries:
        numbers = {**dict(core.counted(s.counts)), "left": core.left(s.counts)}
        total = "-" if s.total is None else str(s.total)
        subject = one_line(s.subject, 60)
        lines.append(
            f"{s.id!s:36}  {s.state:9}  {one_line(s.list_slug, 16):16}  "
            f"{when(s.created_at):{WIDTH}}  {when(s.started_at):{WIDTH}}  "
            f"{when(s.finished_at):{WIDTH}}  {total:>7}  "
            + "".join(f"{numbers[name]:>{widths[name]}}  " for name in counted)
            + subject
        )
    return lines


async def change(
    issues: Issues, issue_id: UUID, action: Literal["pause", "resume", "cancel"]
) -> str:
    before, after = await issues.set_state(issue_id, action)
    if before is None:
        raise LookupError(f"no issue {issue_id}")
    if after is None:
        raise ValueError(f"issue {issue_id} is {before}: cannot {action} it")
    return f"issue {issue_id}: {before} → {after}"
