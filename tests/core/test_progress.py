"""Rate and ETA from ledger facts: honest when the issue runs, stalled when it does not."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from mailer.core.progress import LedgerFacts, counted, describe, estimate, left
from mailer.core.terminal import one_line

NOW = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)


def facts(**changes: object) -> LedgerFacts:
    base = LedgerFacts(
        state="sending",
        total=1_000_000,
        counts={"sent": 600_000, "pending": 399_000, "sending": 1000},
        measured_at=NOW,
        started_at=NOW - timedelta(hours=1),
        finished_at=None,
        sent_in_window=6000,  # 100 a second over the last minute
        last_sent_at=NOW - timedelta(seconds=1),
        next_retry_at=None,
        workers_alive=2,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_the_rate_is_what_the_ledger_recorded_over_the_last_minute() -> None:
    found = estimate(facts())
    assert found.rate == pytest.approx(100.0)
    assert found.eta == pytest.approx(4000.0)
    assert found.done == 600_000
    assert found.remaining == 400_000
    assert found.fraction == pytest.approx(0.6)
    assert describe(found) == "rate 100.0/s over the last minute, ETA 1 h 6 min"


def test_a_watcher_arriving_mid_issue_sees_the_ledger_rate_not_everything_at_once() -> None:
    # Whatever was sent before the viewer looked is in `done`, not in the rate.
    found = estimate(facts(counts={"sent": 448_640_731, "pending": 10}, sent_in_window=60))
    assert found.rate == pytest.approx(1.0)


def test_the_first_second_of_an_issue_does_not_make_a_huge_rate() -> None:
    found = estimate(
        facts(started_at=NOW - timedelta(milliseconds=5), sent_in_window=50, last_sent_at=NOW)
    )
    assert found.rate == pytest.approx(50.0)  # over one second at least
    assert found.span == 1.0
    assert describe(found).startswith("rate 50.0/s over the last 1 s, ETA ")


def test_an_issue_started_recently_is_measured_over_its_own_time() -> None:
    found = estimate(facts(started_at=NOW - timedelta(seconds=10), sent_in_window=200))
    assert found.rate == pytest.approx(20.0)
    assert "over the last 10 s" in describe(found)


def test_nothing_sent_for_two_minutes_is_a_stall_with_no_rate() -> None:
    found = estimate(facts(last_sent_at=NOW - timedelta(minutes=2), sent_in_window=0))
    assert found.rate is None and found.eta is None
    assert describe(found) == "stalled: no worker has sent anything for 2 min"


def test_a_started_issue_that_never_sent_stalls_from_its_start() -> None:
    found = estimate(
        facts(last_sent_at=None, started_at=NOW - timedelta(seconds=90), sent_in_window=0)
    )
    assert describe(found) == "stalled: no worker has sent anything for 1 min 30 s"


def test_no_worker_alive_is_a_stall_even_with_recent_sends() -> None:
    found = estimate(facts(workers_alive=0, last_sent_at=NOW - timedelta(seconds=20)))
    assert found.rate is None
    assert describe(found) == "stalled: no worker process is alive; the last send was 20 s ago"
    never = estimate(facts(workers_alive=0, last_sent_at=None))
    assert describe(never) == "stalled: no worker process is alive"


def test_only_retries_waiting_is_not_a_stall() -> None:
    found = estimate(
        facts(
            counts={"sent": 10, "retrying": 3},
            last_sent_at=NOW - timedelta(minutes=5),
            next_retry_at=NOW + timedelta(seconds=90),
        )
    )
    assert found.stalled is None
    assert describe(found) == "waiting: 3 to retry, the next in 1 min 30 s"


def test_retries_waiting_with_no_worker_alive_are_a_stall() -> None:
    found = estimate(
        facts(
            counts={"retrying": 3},
            workers_alive=0,
            last_sent_at=None,
            next_retry_at=NOW + timedelta(seconds=90),
        )
    )
    assert describe(found) == "stalled: no worker process is alive"  # nobody will retry them


def test_a_retry_overdue_with_nothing_sent_is_a_stall() -> None:
    found = estimate(
        facts(
            counts={"sent": 10, "retrying": 3},
            last_sent_at=NOW - timedelta(minutes=5),
            next_retry_at=NOW - timedelta(minutes=1),
        )
    )
    assert describe(found) == "stalled: no worker has sent anything for 5 min"


@pytest.mark.parametrize("state", ["paused", "done", "cancelled", "scheduled"])
def test_an_issue_not_sending_has_no_rate(state: str) -> None:
    found = estimate(facts(state=state))
    assert (found.rate, found.eta, found.stalled) == (None, None, None)
    assert describe(found) == ""


def test_nothing_left_has_no_rate() -> None:
    found = estimate(facts(counts={"sent": 5}))
    assert found.rate is None
    assert found.fraction == 1.0
    assert estimate(facts(counts={})).fraction == 1.0


def test_a_rate_of_zero_has_an_unknown_eta() -> None:
    found = estimate(facts(sent_in_window=0, last_sent_at=NOW - timedelta(seconds=30)))
    assert found.rate == 0.0
    assert describe(found) == "rate 0.0/s over the last minute, ETA unknown"


def test_text_from_a_job_cannot_act_on_the_terminal() -> None:
    hostile = "Nowości\x1b[2J\r\nBcc: x@example.pl\u2028\u202etxe.exe\x00"
    shown = one_line(hostile)
    assert "\x1b" not in shown and "\r" not in shown and "\n" not in shown
    assert "\u2028" not in shown and "\u202e" not in shown and "\x00" not in shown
    assert shown == "Nowości\\x1b[2J\\r\\nBcc: x@example.pl\\u2028\\u202etxe.exe\\x00"
    assert one_line("Zażółć gęślą jaźń 👍") == "Zażółć gęślą jaźń 👍"
    assert one_line("a" * 10, 5) == "aaaa…"


def test_a_bounced_delivery_counts_as_done() -> None:
    found = estimate(facts(counts={"sent": 590_000, "bounced": 10_000, "pending": 400_000}))
    assert (found.done, found.remaining) == (600_000, 400_000)


def test_counts_read_every_status_by_its_own_name_in_one_order() -> None:
    """Captured mail (the development capture server took it) is captured, never sent."""
    counts = {"captured": 2, "pending": 1, "retrying": 1, "bounced": 1}
    assert counted(counts) == [
        ("sent", 0),
        ("captured", 2),
        ("bounced", 1),
        ("suppressed", 0),
        ("failed", 0),
        ("cancelled", 0),
        ("pending", 1),
        ("sending", 0),
        ("retrying", 1),
    ]
    assert left(counts) == 2
