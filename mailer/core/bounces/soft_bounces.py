"""When soft bounces suppress an address: one point a day, a threshold of bounce days within
a window, lifted after an expiry. Pure: days in, a decision out."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta


@dataclass(frozen=True, slots=True)
class SoftBounceDecision:
    suppressed: bool
    bounce_days: int  # distinct days with a soft bounce in the window ending today
    since: date | None  # the last day the threshold was reached
    until: date | None  # the day the suppression lifts
    reason: str


def soft_bounce_decision(
    days_with_bounces: Sequence[date],
    today: date,
    *,
    threshold: int = 5,
    window_days: int = 30,
    expire_after_days: int = 90,
) -> SoftBounceDecision:
    """Whether soft bounces suppress newsletters to an address, as of `today`.

    One point a day however many bounces it had. The address is suppressed once `threshold`
    bounce days fall within `window_days` (a day and the `window_days - 1` before it), and
    stays so for `expire_after_days` from the last day that held the threshold; then it lifts.
    """
    if min(threshold, window_days, expire_after_days) < 1:
        raise ValueError("threshold, window and expiry must be at least 1")
    days = sorted({day for day in days_with_bounces if day <= today})
    span = timedelta(days=window_days - 1)
    since: date | None = None
    for index, day in enumerate(days):
        if index + 1 - bisect.bisect_left(days, day - span) >= threshold:
            since = day
    bounce_days = len(days) - bisect.bisect_left(days, today - span)
    window = f"{bounce_days} bounce day(s) in the last {window_days}"
    if since is None:
        return SoftBounceDecision(False, bounce_days, None, None, f"{window}, under {threshold}")
    until = since + timedelta(days=expire_after_days)
    if today >= until:
        return SoftBounceDecision(
            False,
            bounce_days,
            since,
            until,
            f"{window}; the suppression of {since} lifted on {until}",
        )
    return SoftBounceDecision(
        True, bounce_days, since, until, f"{threshold} bounce days within {window_days} on {since}"
    )
