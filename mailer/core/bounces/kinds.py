"""What a classified report says: its kind, per recipient and as a whole, with the reason and
the evidence (the field or phrase that decided)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Kind(StrEnum):
    HARD = "hard"  # the address does not exist: suppress at once
    SOFT = "soft"  # mailbox full, expired, unclear: at most one point a day
    POLICY = "policy"  # our IP, content or sender was refused: never against the recipient
    COMPLAINT = "complaint"  # the recipient reported the message as spam or fraud, or opted out
    IGNORED = "ignored"  # delays, auto-replies, not-spam, delivered
    UNPARSEABLE = "unparseable"


# A report's kind is the gravest of its recipients', in this order.
GRAVITY = (Kind.COMPLAINT, Kind.HARD, Kind.SOFT, Kind.POLICY, Kind.IGNORED, Kind.UNPARSEABLE)

Source = Literal["dsn", "arf", "notification", "auto-reply", "non-standard", "none"]


@dataclass(frozen=True, slots=True)
class Recipient:
    """One recipient of a report. `address` is None where the report does not name it (a
    redacted complaint, a bounce only the return-path token ties to its delivery)."""

    address: str | None
    kind: Kind
    reason: str
    status: str | None = None  # RFC 3463 code, "5.1.1"
    action: str | None = None  # DSN Action, lowercased: failed, delayed, delivered, ...
    diagnostic: str | None = None  # the remote server's words, addresses removed
    evidence: str | None = None  # which field or phrase decided: `Status: 5.1.1`
    # A DSN's Final-Recipient where it differs from `address` (its Original-Recipient, the
    # address we sent to): where the receiving site delivered after its own aliases.
    final_recipient: str | None = None


@dataclass(frozen=True, slots=True)
class Report:
    kind: Kind
    reason: str
    source: Source
    recipients: tuple[Recipient, ...] = ()
    # Unverified `b-<token>@` candidates, most trustworthy place first: the report's own
    # envelope headers, then the returned message's envelope sender, then anywhere.
    return_path_tokens: tuple[str, ...] = ()
    envelope_id: str | None = None  # DSN Original-Envelope-Id (RFC 3461 ENVID)
    feedback_type: str | None = None  # ARF Feedback-Type
    evidence: str | None = None  # what decided the report's kind (its gravest recipient's)

    @property
    def return_path_token(self) -> str | None:
        return self.return_path_tokens[0] if self.return_path_tokens else None


def gravest(recipients: tuple[Recipient, ...] | list[Recipient]) -> Recipient:
    return min(recipients, key=lambda one: GRAVITY.index(one.kind))
