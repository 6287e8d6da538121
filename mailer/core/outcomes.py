"""⑦ Classify: what the relay answered (or failed to) decides the outcome of one delivery.

250 → sent. 4xx, a dropped connection or a timeout → retry later, with growing delays.
5xx → failed with the reply stored; a hard bounce (no such recipient: 5.1.1, 5.1.2, 5.1.3,
5.1.6, 5.1.10, as the bounce classifier reads it) also suppresses the address. A refusal
of our sender (MAIL FROM, X.1.7, X.1.8, relaying denied), or a session that cannot be
opened, secured or authenticated, is the relay's problem or ours and never the recipient's:
it is held and retried, whatever the code.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailer.core.bounces.replies import ReplyKind, Stage, classify_reply


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str
    stage: Stage = "data"  # the command it answered

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


@dataclass(frozen=True, slots=True)
class Sent:
    reply: Reply


@dataclass(frozen=True, slots=True)
class Retry:
    reason: str
    deferred: bool = False  # by a 4xx reply (the destination pushing back), not a lost connection
    relay_fault: bool = False  # our sender or session refused: held, never given up on


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str
    suppress: bool = False


Outcome = Sent | Retry | Failed


def classify(reply: Reply) -> Outcome:
    """The bounce classifier's verdict on a reply in session (`bounces.replies`):
    only a hard bounce (5.1.1, 5.1.2, 5.1.3, 5.1.6, 5.1.10) suppresses; our sender or
    relaying refused is held and retried."""
    if 200 <= reply.code < 300:
        return Sent(reply)
    verdict = classify_reply(reply.code, None, reply.text, reply.stage)
    if verdict.kind is ReplyKind.SENDER:
        return Retry(str(reply), relay_fault=True)
    if verdict.temporary:
        return Retry(str(reply), deferred=True)
    return Failed(str(reply), suppress=verdict.kind is ReplyKind.HARD)


def transport_failure(description: str, *, relay_fault: bool = False) -> Retry:
    """No reply at all: the connection dropped or timed out, or no session could be had
    (`relay_fault`); the message may be retried."""
    return Retry(description, relay_fault=relay_fault)


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
