"""One spelling of a moment for operators: UTC, to the second; and one of a length of time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from mailer.core.times import WIDTH, duration, when


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


def test_a_length_of_time_reads_to_the_second_under_ten_minutes_then_to_the_minute() -> None:
    assert duration(0.4) == "0 s"
    assert duration(59) == "59 s"
    assert duration(65) == "1 min 5 s"
    assert duration(120) == "2 min"
    assert duration(125) == "2 min 5 s"
    assert duration(599) == "9 min 59 s"
    assert duration(601) == "10 min"
    assert duration(66 * 60) == "1 h 6 min"
    assert duration(3 * 3600 + 61) == "3 h 1 min"
    assert duration(-3) == "0 s"  # clocks a moment apart: never a negative length
