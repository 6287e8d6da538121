"""③ Decide: may this delivery be sent, given what the database says about the address?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

SuppressionReason = Literal["hard_bounce", "soft_bounce", "complaint", "manual", "erased"]
SUPPRESSION_REASONS: tuple[SuppressionReason, ...] = get_args(SuppressionReason)
SubscriptionStatus = Literal["pending", "subscribed", "unsubscribed"]


@dataclass(frozen=True, slots=True)
class Send:
    pass


@dataclass(frozen=True, slots=True)
class Suppress:
    reason: str


Decision = Send | Suppress


def decide_receipt(suppression: SuppressionReason | None) -> Decision:
    """Receipts are part of a purchase: newsletter opt-outs do not apply, and neither does an
    erasure (a new purchase is a new request), nor soft bounces (they suppress newsletters
    only), but a hard bounce, an operator's suppression or a complaint does."""
    if suppression in ("hard_bounce", "complaint", "manual"):
        return Suppress(suppression)
    return Send()


def decide_newsletter(
    subscription: SubscriptionStatus | None, suppression: SuppressionReason | None
) -> Decision:
    """A newsletter goes only to someone subscribed *now* and not suppressed."""
    if suppression is not None:
        return Suppress(suppression)
    if subscription != "subscribed":
        return Suppress("unsubscribed" if subscription == "unsubscribed" else "not_subscribed")
    return Send()
