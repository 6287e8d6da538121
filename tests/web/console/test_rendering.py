"""The console's pure helpers: the chart, masking of parked jobs, lengths of time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from mailer.adapters.ledger_views import MinuteCount
from mailer.core.times import duration
from mailer.web.console.charts import sends_chart
from mailer.web.console.kit import templates
from mailer.web.console.masking import mask_text, masked_headers, pretty_body
from tests.conftest import ROOT

NOW = datetime(2026, 12, 2, 10, 30, 20, tzinfo=UTC)


def test_the_chart_stacks_each_minute_by_kind_and_outcome() -> None:
    minute = NOW.replace(second=0, microsecond=0)
    counts = [
        MinuteCount(minute, "newsletter", "sent", 40),
        MinuteCount(minute, "receipt", "sent", 10),
        MinuteCount(minute - timedelta(minutes=5), "receipt", "failed", 3),
        MinuteCount(minute - timedelta(minutes=90), "receipt", "sent", 999),  # outside the hour
    ]
    svg, legend = sends_chart(counts, now=NOW)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<title>10:30 newsletter sent: 40</title>" in svg
    assert "<title>10:25 receipt failed: 3</title>" in svg
    assert "999" not in svg.split("</title>")[-1]  # not drawn
    assert [(s.name, s.total) for s in legend][:2] == [
        ("receipt sent", 10),
        ("newsletter sent", 40),
    ]
    assert ">50<" in svg  # the axis tops at a round number above the peak


def test_an_empty_hour_draws_an_empty_chart() -> None:
    svg, legend = sends_chart([], now=NOW)
    assert "<rect" not in svg
    assert legend == []


def test_a_status_name_is_escaped_in_the_chart() -> None:
    minute = NOW.replace(second=0, microsecond=0)
    svg, _ = sends_chart([MinuteCount(minute, "receipt", "<script>", 1)], now=NOW)
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg


def test_addresses_are_masked_in_bodies_and_headers() -> None:
    body = json.dumps(
        {
            "to": {"email": "jan.kowalski@example.pl", "name": "Jan"},
            "attachments": [{"filename": "a.pdf", "data_base64": "A" * 5000}],
            "nested": [["anna.nowak@example.pl"]],
        }
    ).encode()
    shown = pretty_body(body)
    assert "jan.kowalski@example.pl" not in shown and "anna.nowak@example.pl" not in shown
    assert "j***i@e***e.pl" in shown
    assert "(5000 characters)" in shown
    assert "A" * 100 not in shown
    headers = masked_headers({"x-mailer-reason": b"550 <jan@example.pl> unknown", "n": 3})
    assert headers == [("n", "3"), ("x-mailer-reason", "550 <j***n@e***e.pl> unknown")]
    assert mask_text("no address here") == "no address here"


def test_hostile_bodies_are_shown_not_crashed_on() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert pretty_body(deep).startswith("[[[")  # too deep for the parser: shown as text
    assert len(pretty_body(b"x" * 10_000_000)) <= 256 * 1024
    assert (
        pretty_body(b"\xff\xfe not utf-8 jan@example.pl") == "\ufffd\ufffd not utf-8 j***n@e***e.pl"
    )


def test_the_console_writes_a_length_of_time_as_the_commands_do() -> None:
    """One formatter: a worker silent for 66 minutes reads `1 h 6 min` on the console as in
    `mailer workers` and `mailer issue status`, and a last send as long ago likewise."""
    filters = templates(ROOT / "templates").filters
    for seconds in (42, 65, 125, 601, 66 * 60, 3 * 3600 + 61):
        assert filters["duration"](seconds) == duration(seconds), seconds
    assert filters["duration"](66 * 60) == "1 h 6 min"
    assert filters["ago"](NOW - timedelta(minutes=66), NOW) == "1 h 6 min ago"
    assert filters["ago"](None, NOW) == "never"
