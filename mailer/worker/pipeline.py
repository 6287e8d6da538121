"""⑤ compose ─► ⑥ sign ─► relay ─► ⑦ classify ─► the write to record, for one delivery.

Receipts and newsletters share this path; they differ in how they find their recipients and
in the relay pool they use. What the relay answered also tells readiness whether the relay
is taking our sessions at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from mailer.core.deliveries import RetryPolicy, Write, attempt_write
from mailer.core.messages import Draft
from mailer.core.outcomes import Outcome, Retry
from mailer.health import RelayHealth
from mailer.worker.sending import Sender

log = logging.getLogger(__name__)


class Attempts:
    def __init__(
        self,
        *,
        sender: Sender,
        health: RelayHealth,
        policy: RetryPolicy,
        clock: Callable[[], datetime],
        captured: bool = False,
    ) -> None:
        self._captured = captured  # the relay is the embedded capture server
        self._sender = sender
        self._health = health
        self._policy = policy
        self._clock = clock

    async def attempt(
        self,
        delivery_id: int,
        draft: Draft,
        *,
        attempts_before: int,
        first_seen: datetime,
        still_wanted: Callable[[], bool] | None = None,
    ) -> tuple[Write, Outcome]:
        """Raises ShuttingDown or Withdrawn before anything is sent, and ValueError when the
        draft cannot be made into a message."""
        now = self._clock()
        outcome = await self._sender.send(draft, now, still_wanted, delivery_id=delivery_id)
        if isinstance(outcome, Retry) and outcome.relay_fault:
            self._health.session_refused(outcome.reason)
            log.error("relay refused our session or sender (held, retried): %s", outcome.reason)
        elif not isinstance(outcome, Retry) or outcome.deferred:
            self._health.session_worked()
        write = attempt_write(
            delivery_id,
            outcome,
            address=draft.to.address,
            message_id=draft.message_id,
            attempts_before=attempts_before,
            tried_for=(now - first_seen).total_seconds(),
            now=now,
            policy=self._policy,
            captured=self._captured,
        )
        return write, outcome
