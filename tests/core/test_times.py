"""One spelling of a moment for operators: UTC, to the second."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from mailer.core.times import WIDTH, when


def test_a_moment_reads_in_utc_to_the_second_whatever_its_zone() -> None:
    warsaw = timezone(timedelta(hours=1))
    at = datetime(2026, 12, 7, 12, 49, 58, 731_000, tzinfo=warsaw)
    assert when(at) == "2026-12-07 11:49:58 UTC"
    assert when(at.astimezone(UTC)) == when(at)
    assert len(when(at)) == WIDTH


def test_no_moment_reads_as_told_and_a_naive_one_is_refused() -> None:
    assert when(None) == "-"
    assert when(None, "never") == "never"
    with pytest.raises(ValueError, match="no time zone"):
        when(datetime(2026, 12, 7, 11, 49, 58))  # no tzinfo: the case refused
