"""Timing helpers and the results table every benchmark prints."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence


def per_call(function: Callable[[], object], *, seconds: float = 1.0) -> float:
    """Mean seconds per call, after a warm-up, over about `seconds` of calls."""
    for _ in range(3):
        function()
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        function()
        calls += 1
    return elapsed / calls


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if index == 0:
            print("  ".join("-" * w for w in widths))
