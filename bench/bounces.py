"""Cost of the bounce path's CPU steps, per report, next to flufl.bounce alone.

    .venv/bin/python -m bench.bounces

What the receiver does per RCPT (verify a return path) and per source (the rate limiter, with
its table full), and what classification costs per kind of report: a structured DSN, an ARF
complaint, a non-standard bounce from the corpus (flufl.bounce's fallback), and junk. The
ratio column compares classify_report with flufl.bounce's all_failures on the same bytes
(which finds addresses only: no status, no kind).
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
from tests.support import corpora
from tests.support.bounces import arf, dsn

KEYS = ReturnPathKeys.from_secrets(b"s" * 40)
TODAY = date(2026, 12, 2)
VERP = return_path(KEYS, 4242, TODAY, "bounces.lucid.example")


def _corpus(name: str) -> bytes:
    corpus = corpora.flufl_bounce()
    if corpus is None:
        raise SystemExit(f"missing {corpora.FLUFL_MISSING}")
    return (corpus.messages / name).read_bytes()


def _flufl(raw: bytes) -> object:
    try:
        return all_failures(email.message_from_bytes(raw))
    except (LookupError, ValueError, TypeError, AttributeError):
        return None  # it raises on some inputs (no From): the classifier retries, then gives up


def main() -> None:
    logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)  # as the service does
    reports = {
        "DSN, hard 5.1.1": dsn(VERP, "jan@example.pl"),
        "ARF complaint": arf(VERP, "jan@example.pl"),
        "non-standard (corpus exim_01)": _corpus("exim_01.txt"),
        "non-standard (corpus qmail_01)": _corpus("qmail_01.txt"),
        "junk": b"Subject: hello\r\n\r\nnothing to see\r\n",
    }
    rows: list[tuple[object, ...]] = []
    for name, raw in reports.items():
        ours = per_call(partial(classify_report, raw), seconds=0.5)
        flufl = per_call(partial(_flufl, raw), seconds=0.5)
        rows.append(
            (
                name,
                f"{len(raw):,}",
                f"{ours * 1e6:,.0f}",
                f"{flufl * 1e6:,.0f}",
                f"{ours / flufl:.2f}",
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


if __name__ == "__main__":
    main()
