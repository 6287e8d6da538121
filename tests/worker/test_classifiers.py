"""The classifier processes: a report classified apart from the event loop, one over its time
limit cut off and ended unparseable, one whose process dies likewise, and a close that ends
every process at once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailer.core.bounces.kinds import Kind
from mailer.core.bounces.reports import classify_report
from mailer.errors import TemporaryFailure
from mailer.worker.classifiers import ClassifierPool, ClassifierStopped
from tests.support.bounces import dsn
from tests.support.hostile_bounces import cubic_lines

VERP = "b-" + "a" * 37 + "@bounces.lucid.example"


def classifier_pids() -> list[int]:
    """The classifier processes this test process started."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and b"mailer.worker.classifier_process" in command:
            found.append(int(stat.parent.name))
    return found


@pytest.fixture
async def pool() -> AsyncIterator[ClassifierPool]:
    pool = ClassifierPool(timeout=1.0)
    yield pool
    await pool.close()


async def test_a_report_is_classified_as_the_classifier_does_in_process(
    pool: ClassifierPool,
) -> None:
    raw = dsn(VERP, "jan@example.pl")
    assert await pool.classify(raw) == classify_report(raw)
    assert await pool.classify(raw) == classify_report(raw)
    assert pool.started == 1  # one process, kept for the next report


async def test_a_report_over_the_time_limit_is_cut_off_and_unparseable(
    pool: ClassifierPool,
) -> None:
    """flufl.bounce reads this report for about 30 s; the limit is 1 s."""
    await pool.classify(b"Subject: warm up\n\nhello\n")  # the process is up
    started = time.monotonic()
    report = await pool.classify(cubic_lines(VERP))
    took = time.monotonic() - started
    assert report.kind is Kind.UNPARSEABLE
    assert report.reason.startswith("classification took longer than 1 s, its limit: given up")
    assert took < 3, f"cut off after {took:.2f} s"
    assert classifier_pids() == []  # killed, not left running
    after = await pool.classify(dsn(VERP, "jan@example.pl"))
    assert after.kind is Kind.HARD and pool.started == 2  # a new process for the next one


async def test_a_report_whose_process_dies_is_unparseable(pool: ClassifierPool) -> None:
    """As when the kernel ends it (out of memory, or over its CPU limit)."""
    pool.timeout = 30.0
    await pool.classify(b"Subject: warm up\n\nhello\n")
    (pid,) = classifier_pids()
    reading = asyncio.create_task(pool.classify(cubic_lines(VERP)))
    await asyncio.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    report = await reading
    assert report.kind is Kind.UNPARSEABLE
    assert report.reason.startswith("the classifier process ended while reading it (SIGKILL)")


async def test_close_ends_a_classification_under_way_at_once(pool: ClassifierPool) -> None:
    pool.timeout = 60.0
    await pool.classify(b"Subject: warm up\n\nhello\n")
    reading = asyncio.create_task(pool.classify(cubic_lines(VERP)))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await pool.close()
    with pytest.raises(ClassifierStopped):
        await reading
    took = time.monotonic() - started
    assert took < 1, f"closed after {took:.2f} s"
    assert classifier_pids() == []
    with pytest.raises(ClassifierStopped):
        await pool.classify(b"Subject: after\n\nhello\n")


async def test_the_event_loop_runs_while_a_report_is_classified(pool: ClassifierPool) -> None:
    """Ticks of 10 ms while a report runs to its 1 s limit: the worst gap stays small (in
    the service's thread the same report held the loop for its whole 30 s)."""
    await pool.classify(b"Subject: warm up\n\nhello\n")
    reading = asyncio.create_task(pool.classify(cubic_lines(VERP)))
    gaps = []
    last = time.monotonic()
    while not reading.done():
        await asyncio.sleep(0.01)
        now = time.monotonic()
        gaps.append(now - last)
        last = now
    assert (await reading).kind is Kind.UNPARSEABLE
    assert max(gaps) < 0.25, f"the loop stalled {max(gaps) * 1000:.0f} ms"


@pytest.mark.parametrize(
    "command",
    [["/nonexistent/python"], [sys.executable, "-c", "import sys; sys.exit(3)"]],
    ids=["cannot be run", "exits at once"],
)
async def test_a_classifier_that_cannot_start_is_a_temporary_failure(command: list[str]) -> None:
    """Not the report's fault: it waits for the sweep instead of ending unparseable."""
    pool = ClassifierPool(command=command)
    try:
        with pytest.raises(TemporaryFailure, match="classifier process"):
            await pool.classify(dsn(VERP, "jan@example.pl"))
    finally:
        await pool.close()
