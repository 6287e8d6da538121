"""What the database announces while issues send: opt-outs, and issues paused, resumed or
cancelled. Every dispatcher checks these right before each message goes to the relay."""

from __future__ import annotations

import asyncio
import logging
import time
from uuid import UUID

from mailer.core.issues import HALTED, IssueState, issue_state

log = logging.getLogger(__name__)
REVOCATION_MEMORY = 600.0  # seconds an opt-out or a halt is remembered


class Signals:
    def __init__(self) -> None:
        self._revoked: dict[tuple[int, str], float] = {}
        self._halted: dict[UUID, IssueState] = {}
        self._halted_at: dict[UUID, float] = {}
        self.wake = asyncio.Event()

    def on_optout(self, payload: str) -> None:
        """`<subscriber>:<list id>` or `<subscriber>:*` (erased)."""
        subscriber, _, list_id = payload.partition(":")
        now = time.monotonic()
        self._revoked[(int(subscriber), list_id)] = now
        if len(self._revoked) > 10_000:
            cutoff = now - REVOCATION_MEMORY
            self._revoked = {k: t for k, t in self._revoked.items() if t > cutoff}

    def on_issue(self, payload: str) -> None:
        """`<issue>:<state>`."""
        issue, _, state = payload.partition(":")
        issue_id = UUID(issue)
        if state in HALTED:
            self._halted[issue_id] = issue_state(state)
            self._halted_at[issue_id] = time.monotonic()
            log.info("issue %s %s", issue_id, state)
        else:
            was = self._halted.pop(issue_id, None)
            if was == "paused":  # to `scheduled` when it was paused before it started
                log.info("issue %s resumed: %s", issue_id, state)
            else:
                log.info("issue %s %s", issue_id, state)
        self.wake.set()

    def on_reconnect(self) -> None:
        self.wake.set()

    def halted(self, issue_id: UUID) -> IssueState | None:
        return self._halted.get(issue_id)

    def revoked(self, subscriber_id: int, list_id: int) -> bool:
        return (subscriber_id, str(list_id)) in self._revoked or (
            subscriber_id,
            "*",
        ) in self._revoked

    def forget_old(self) -> None:
        cutoff = time.monotonic() - REVOCATION_MEMORY
        for issue_id in [i for i, at in self._halted_at.items() if at < cutoff]:
            self._halted.pop(issue_id, None)
            self._halted_at.pop(issue_id, None)
