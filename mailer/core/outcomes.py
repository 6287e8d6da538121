"""⑦ Classify: what the relay answered (or failed to) decides the outcome of one delivery.

250 → sent. 4xx, a dropped connection or a timeout → retry later, with growing delays.
5xx → failed with the reply stored; a 5.1.x reply (no such recipient) also suppresses the
address, so it is not tried again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()

    @property
    def enhanced(self) -> tuple[int, int, int] | None:
        found = _ENHANCED.match(self.text)
        return (int(found[1]), int(found[2]), int(found[3])) if found else None


@dataclass(frozen=True, slots=True)
class Sent:
    reply: Reply


@dataclass(frozen=True, slots=True)
class Retry:
    reason: str
    deferred: bool = False  # by a 4xx reply (the destination pushing back), not a lost connection


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str
    suppress: bool = False


Outcome = Sent | Retry | Failed


def scrub(text: str, address: str) -> str:
    """The relay's words without the recipient's address, fit to store and log."""
    if not address:
        return text
    return re.sub(re.escape(address), "<recipient>", text, flags=re.IGNORECASE)


def classify(reply: Reply) -> Outcome:
    if 200 <= reply.code < 300:
        return Sent(reply)
    if 400 <= reply.code < 500:
        return Retry(str(reply), deferred=True)
    enhanced = reply.enhanced
    # X.1.x is about the addressee: bad mailbox, bad system, bad syntax, moved, null MX.
    return Failed(str(reply), suppress=enhanced is not None and enhanced[:2] == (5, 1))


def transport_failure(description: str) -> Retry:
    """No reply at all: the connection dropped or timed out; the message may be retried."""
    return Retry(description)


def delay_tiers(first: float, maximum: float, multiplier: float) -> tuple[float, ...]:
    """The distinct retry delays, each a queue of its own: first, then times multiplier
    until maximum."""
    tiers = [first]
    while tiers[-1] < maximum and multiplier > 1:
        tiers.append(min(tiers[-1] * multiplier, maximum))
    return tuple(tiers)


def retry_delay(attempt: int, tiers: tuple[float, ...]) -> float:
    """The delay before attempt `attempt + 1`, after `attempt` (≥ 1) attempts failed."""
    return tiers[min(max(attempt, 1), len(tiers)) - 1]


GAVE_UP = "gave up: still failing temporarily after the retry period"


@dataclass(frozen=True, slots=True)
class Settlement:
    """What the ledger records for one attempt: its status, the reply without the address,
    why, and whether the address is to be suppressed."""

    status: Literal["sent", "failed", "retrying"]
    reply: str
    detail: str | None = None
    hard_bounce: bool = False


def settle(outcome: Outcome, *, address: str, tried_for: float, give_up_after: float) -> Settlement:
    """An attempt's outcome as recorded; a temporary failure becomes final after
    `give_up_after` seconds of trying."""
    if isinstance(outcome, Sent):
        return Settlement("sent", scrub(str(outcome.reply), address))
    reply = scrub(outcome.reason, address)
    if isinstance(outcome, Failed):
        return Settlement("failed", reply, "rejected by the relay", hard_bounce=outcome.suppress)
    if tried_for >= give_up_after:
        return Settlement("failed", reply, GAVE_UP)
    return Settlement("retrying", reply, "temporary failure")
