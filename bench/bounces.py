"""The bounce path: the classifier over the labelled sisimai corpus (the per-kind confusion
matrix, the per-family agreement and hard recall, and the time per message), and the cost of
each CPU step per report, next to flufl.bounce alone.

    .venv/bin/python -m bench.bounces

The corpus figures are scored as tests/core/test_bounce_labels.py scores them
(tests/support/bounce_scores.py). The time per message is the least of ROUNDS runs of each
message (the machine's other work only adds); mean and worst over the 601 files.
"""

from __future__ import annotations

import email
import logging
from datetime import date
from functools import partial

from flufl.bounce import all_failures

from bench.table import per_call, print_table
from mailer.adapters.inbound import MAX_SOURCES, SourceLimiter
from mailer.core.bounces.reports import classify_report
from mailer.core.return_paths import ReturnPathKeys, decode, return_path
from tests.support import bounce_scores, corpora
from tests.support.bounces import arf, dsn

KEYS = ReturnPathKeys.from_secrets(b"s" * 40)
TODAY = date(2026, 12, 2)
VERP = return_path(KEYS, 4242, TODAY, "bounces.lucid.example")
ROUNDS = 5


def _flufl(raw: bytes) -> object:
    try:
        return all_failures(email.message_from_bytes(raw))
    except (LookupError, ValueError, TypeError, AttributeError):
        return None  # it raises on some inputs (no From): the classifier retries, then gives up


def _percent(part: float) -> str:
    return f"{100 * part:.1f} %"


def corpus() -> None:
    found = corpora.sisimai()
    if found is None:
        raise SystemExit(f"missing {corpora.SISIMAI_MISSING}")
    scores = bounce_scores.score(found.maildir.parent, found.labels, classify_report, rounds=ROUNDS)
    confusion = scores.confusion()
    kinds = bounce_scores.KINDS
    print_table(
        "the sisimai corpus: messages by label (rows) and by our kind (columns)",
        ("label \\ ours", *(kind.value for kind in kinds), "all"),
        [
            (
                label.value,
                *(confusion[(label, ours)] for ours in kinds),
                sum(confusion[(label, ours)] for ours in kinds),
            )
            for label in kinds[:-1]
        ],
    )
    labelled, false = scores.hard()
    hits, total = scores.recipients()
    unparseable = sum(one.report.kind.value == "unparseable" for one in scores.bounces())
    worst = scores.worst
    print_table(
        "the sisimai corpus: targets",
        ("measure", "value", "target"),
        [
            (
                "hard recall",
                f"{len(labelled) - _missed(labelled)} of {len(labelled)} = "
                f"{_percent(scores.hard_recall)}",
                "≥ 92 %",
            ),
            ("false hard", f"{len(false)}: {', '.join(scores.false_hard) or '-'}", "≤ 1"),
            ("kind agreement, strict", _percent(scores.strict), "≥ 85 %"),
            ("kind agreement, coarse", _percent(scores.coarse), "≥ 92 %"),
            (
                "unparseable",
                f"{unparseable} of {len(scores.bounces())} = {_percent(scores.unparseable)}",
                "≤ 2 %",
            ),
            (
                "labelled recipients found",
                f"{hits} of {total} = {_percent(hits / total)}",
                "≥ 98 %",
            ),
            ("exceptions", str(len(scores.exceptions)), "0"),
            ("time per message, mean", f"{scores.mean_seconds * 1e3:.2f} ms", "≤ 1 ms"),
            (
                "time per message, worst",
                f"{worst.seconds * 1e3:.2f} ms ({worst.name.rpartition('/')[2]})",
                "≤ 20 ms",
            ),
        ],
    )
    print_table(
        "the sisimai corpus by family",
        ("family", "messages", "agree", "hard", "called hard", "hard recall"),
        [
            (mta, messages, agree, hard, called, _percent(called / hard) if hard else "-")
            for mta, messages, agree, hard, called in scores.by_family()
        ],
    )


def _missed(labelled: list[bounce_scores.Scored]) -> int:
    return sum(one.report.kind.value != "hard" for one in labelled)


def steps() -> None:
    flufl = corpora.flufl_bounce()
    if flufl is None:
        raise SystemExit(f"missing {corpora.FLUFL_MISSING}")
    reports = {
        "DSN, hard 5.1.1": dsn(VERP, "jan@example.pl"),
        "ARF complaint": arf(VERP, "jan@example.pl"),
        "non-standard (corpus exim_01)": (flufl.messages / "exim_01.txt").read_bytes(),
        "non-standard (corpus qmail_01)": (flufl.messages / "qmail_01.txt").read_bytes(),
        "junk": b"Subject: hello\r\n\r\nnothing to see\r\n",
    }
    rows: list[tuple[object, ...]] = []
    for name, raw in reports.items():
        ours = per_call(partial(classify_report, raw), seconds=0.5)
        theirs = per_call(partial(_flufl, raw), seconds=0.5)
        rows.append(
            (
                name,
                f"{len(raw):,}",
                f"{ours * 1e6:,.0f}",
                f"{theirs * 1e6:,.0f}",
                f"{ours / theirs:.2f}",
            )
        )
    print_table(
        "classification per report (µs)",
        ("report", "bytes", "classify_report", "flufl all_failures", "ratio"),
        rows,
    )

    limiter = SourceLimiter(1.0, 30)
    for n in range(MAX_SOURCES):
        limiter.allow(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}")
    counter = iter(range(10**9))
    new_source = per_call(lambda: limiter.allow(f"192.0.{next(counter) % 65536}.1"), seconds=0.5)
    known = per_call(lambda: limiter.allow("10.0.0.1"), seconds=0.5)
    verify = per_call(lambda: decode(KEYS, VERP, today=TODAY, max_age_days=30), seconds=0.5)
    forged = VERP[:10] + ("a" if VERP[10] != "a" else "b") + VERP[11:]
    refuse = per_call(lambda: decode(KEYS, forged, today=TODAY, max_age_days=30), seconds=0.5)
    print_table(
        "receiver, per command (µs)",
        ("step", "µs"),
        [
            ("verify a return path (RCPT)", f"{verify * 1e6:.1f}"),
            ("refuse a forged one (RCPT)", f"{refuse * 1e6:.1f}"),
            (f"rate limit, new source, {MAX_SOURCES:,} known (MAIL)", f"{new_source * 1e6:.1f}"),
            ("rate limit, known source (MAIL)", f"{known * 1e6:.1f}"),
        ],
    )


def main() -> None:
    logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)  # as the service does
    corpus()
    steps()


if __name__ == "__main__":
    main()
