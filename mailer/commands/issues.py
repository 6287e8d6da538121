"""`mailer issue status|pause|resume|cancel ISSUE_ID`: what an operator sees and does."""

from __future__ import annotations

import asyncio
import sys
from typing import Literal, TextIO
from uuid import UUID

from tqdm import tqdm

from mailer.adapters.issues import Issues, Progress

ORDER = ("sent", "suppressed", "failed", "retrying", "sending", "pending", "cancelled")
FINISHED = ("sent", "captured", "suppressed", "failed", "cancelled")
FINAL_STATES = ("done", "cancelled")


def describe(progress: Progress) -> str:
    counts = progress.counts
    total = progress.total if progress.total is not None else sum(counts.values())
    lines = [f"issue {progress.issue_id} (list {progress.list_slug}): {progress.state}"]
    if progress.state == "scheduled":
        lines.append(f"  starts at {progress.send_at.isoformat(timespec='seconds')}")
    lines.append(
        f"  total {total}   "
        + "   ".join(
            f"{name} {counts.get(name, 0)}"
            for name in ("captured", *ORDER)
            if name != "captured" or counts.get(name)
        )
    )
    remaining = sum(counts.get(name, 0) for name in ("pending", "retrying", "sending"))
    if progress.state == "sending":
        rate = progress.rate
        eta = _duration(remaining / rate) if rate > 0 else "unknown"
        lines.append(f"  rate {rate:,.1f}/s over the last minute, ETA {eta}")
    elif progress.finished_at is not None:
        lines.append(f"  finished at {progress.finished_at.isoformat(timespec='seconds')}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def done_count(progress: Progress) -> int:
    return sum(progress.counts.get(name, 0) for name in FINISHED)


async def watch(
    issues: Issues, issue_id: UUID, out: TextIO = sys.stderr, interval: float = 1.0
) -> Progress | None:
    """A live progress bar until the issue is done or cancelled."""
    progress = await issues.progress(issue_id)
    if progress is None:
        return None
    with tqdm(total=progress.total or 0, unit="msg", file=out, desc=str(issue_id)[:8]) as bar:
        while True:
            bar.total = progress.total or 0
            bar.update(done_count(progress) - bar.n)
            bar.set_postfix_str(progress.state)
            if progress.state in FINAL_STATES:
                break
            await asyncio.sleep(interval)
            latest = await issues.progress(issue_id)
            assert latest is not None
            progress = latest
    return progress


async def change(
    issues: Issues, issue_id: UUID, action: Literal["pause", "resume", "cancel"]
) -> str:
    before, after = await issues.set_state(issue_id, action)
    if before is None:
        raise LookupError(f"no issue {issue_id}")
    if after is None:
        raise ValueError(f"issue {issue_id} is {before}: cannot {action} it")
    return f"issue {issue_id}: {before} → {after}"
