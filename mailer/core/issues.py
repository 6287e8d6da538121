"""A newsletter issue's states, and the actions an operator moves it between them with.

    scheduled ─its send_at─► sending ─every delivery at an outcome─► done
    scheduled | sending ─pause─► paused ─resume─► sending (scheduled, if it had not started)
    scheduled | sending | paused ─cancel─► cancelled

`done` and `cancelled` are ended: nothing more is sent, and the counts no longer change.
"""

from __future__ import annotations

from typing import Literal, get_args

IssueState = Literal["scheduled", "sending", "paused", "cancelled", "done"]
ISSUE_STATES: tuple[IssueState, ...] = get_args(IssueState)
ENDED: tuple[IssueState, ...] = ("done", "cancelled")
HALTED: tuple[IssueState, ...] = ("paused", "cancelled")  # its messages must not go now
UNDER_WAY: tuple[IssueState, ...] = ("sending", "paused")  # what the metrics follow
NOT_FINISHED: tuple[IssueState, ...] = ("scheduled", "sending", "paused")

IssueAction = Literal["pause", "resume", "cancel"]
ISSUE_ACTIONS: tuple[IssueAction, ...] = get_args(IssueAction)
# What each action applies to, and the state it leads to.
TRANSITIONS: dict[IssueAction, tuple[tuple[IssueState, ...], IssueState]] = {
    "pause": (("scheduled", "sending"), "paused"),
    "resume": (("paused",), "sending"),
    "cancel": (("scheduled", "sending", "paused"), "cancelled"),
}


def issue_state(text: str) -> IssueState:
    """The state a stored issue is in; ValueError for a word that is not one."""
    for state in ISSUE_STATES:
        if state == text:
            return state
    raise ValueError(f"{text!r} is not an issue state")


def issue_action(text: str) -> IssueAction | None:
    """The action `text` names, if any."""
    return next((action for action in ISSUE_ACTIONS if action == text), None)
