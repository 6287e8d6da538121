"""`mailer issue list|status|pause|resume|cancel`: what an operator sees and does.
(`issue preview` and `issue test`: mailer/commands/previews.py.)"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TextIO
from uuid import UUID

import asyncpg
from tqdm import tqdm

from mailer.adapters.issues import Issues, IssueSummary, Progress
from mailer.commands import previews
from mailer.commands.running import Subcommands, on_database
from mailer.config import Settings
from mailer.core import progress as core
from mailer.core.deliveries import OUTCOMES
from mailer.core.issues import ENDED, ISSUE_STATES, IssueAction, issue_action
from mailer.core.terminal import one_line
from mailer.core.times import WIDTH, when
from mailer.errors import MailerError

# tqdm's own rate and ETA come from what this viewer saw change, which is everything at once
# when it starts mid-issue: the bar shows the ledger's rate instead.
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}{postfix}"
_ACTIONS_SAID: dict[IssueAction, str] = {
    "pause": "stop sending within seconds",
    "resume": "carry on where it stopped",
    "cancel": "send nothing more; the rest is marked cancelled",
}


def add_parser(commands: Subcommands) -> None:
    issue = commands.add_parser("issue", help="a newsletter issue being sent")
    actions = issue.add_subparsers(dest="issue_command", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", help="issues newest first: state, list, subject, times, counts by outcome"
    )
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--state", choices=ISSUE_STATES)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    on_database(listing, list_issues)
    status = actions.add_parser("status", help="counts by outcome, rate and ETA")
    status.add_argument("issue_id", type=UUID, metavar="ISSUE_ID")
    status.add_argument("--watch", action="store_true", help="a live progress bar until done")
    on_database(status, show_status)
    for name, text in _ACTIONS_SAID.items():
        action = actions.add_parser(name, help=text)
        action.add_argument("issue_id", type=UUID, metavar="ISSUE_ID")
        on_database(action, change_state)
    previews.add_parser(actions)


def _issues(settings: Settings, pool: asyncpg.Pool) -> Issues:
    """The issues, each subject read in its list's default locale."""
    locales = {slug: one.default_locale for slug, one in settings.lists.items()}
    return Issues(pool, default_locales=locales)


async def list_issues(args: argparse.Namespace, settings: Settings, pool: asyncpg.Pool) -> int:
    states = None if args.state is None else [args.state]
    found = await _issues(settings, pool).newest(limit=args.limit, states=states)
    for line in issue_rows(found, as_json=args.json):
        print(line)
    return 0


async def show_status(args: argparse.Namespace, settings: Settings, pool: asyncpg.Pool) -> int:
    issues = _issues(settings, pool)
    progress = await (
        watch(issues, args.issue_id) if args.watch else issues.progress(args.issue_id)
    )
    if progress is None:
        raise MailerError(f"no issue {args.issue_id}")
    print(describe(progress))
    return 0


async def change_state(args: argparse.Namespace, settings: Settings, pool: asyncpg.Pool) -> int:
    action = issue_action(args.issue_command)
    assert action is not None  # the parser offers no other
    try:
        print(await change(_issues(settings, pool), args.issue_id, action))
    except (LookupError, ValueError) as exc:
        raise MailerError(str(exc)) from None
    return 0


def describe(progress: Progress) -> str:
    issue = progress.issue
    counts = issue.counts
    total = issue.total if issue.total is not None else sum(counts.values())
    lines = [f"issue {issue.id} (list {issue.list_slug}): {issue.state}"]
    if issue.state == "scheduled":
        lines.append(f"  starts at {when(issue.send_at)}")
    shown = "   ".join(f"{status} {n}" for status, n in core.counted(counts))
    lines.append(f"  total {total}   {shown}")
    if issue.state == "sending":
        lines.append(f"  {core.describe(progress.estimate) or 'nothing left to send'}")
    elif issue.finished_at is not None:
        lines.append(f"  finished at {when(issue.finished_at)}")
    lines.append(f"  measured at {when(progress.facts.measured_at)}")
    return "\n".join(lines)


def status_line(progress: Progress) -> str:
    """The bar's postfix: the state, and the rate or why there is none."""
    state = progress.issue.state
    detail = core.describe(progress.estimate) if state == "sending" else ""
    return f"{state}, {detail}" if detail else state


async def watch(
    issues: Issues, issue_id: UUID, out: TextIO = sys.stderr, interval: float = 1.0
) -> Progress | None:
    """A live progress bar until the issue is done or cancelled."""
    progress = await issues.progress(issue_id)
    if progress is None:
        return None
    first = progress.estimate
    with tqdm(
        total=progress.issue.total or 0,
        initial=first.done,
        unit="msg",
        file=out,
        desc=str(issue_id)[:8],
        bar_format=BAR_FORMAT,
    ) as bar:
        while True:
            bar.total = progress.issue.total or 0
            bar.n = progress.estimate.done
            bar.set_postfix_str(status_line(progress), refresh=False)
            bar.refresh()
            if progress.issue.state in ENDED:
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
    counted = [*OUTCOMES, "left"]
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


async def change(issues: Issues, issue_id: UUID, action: IssueAction) -> str:
    before, after = await issues.set_state(issue_id, action)
    if before is None:
        raise LookupError(f"no issue {issue_id}")
    if after is None:
        raise ValueError(f"issue {issue_id} is {before}: cannot {action} it")
    return f"issue {issue_id}: {before} → {after}"
