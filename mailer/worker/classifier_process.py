"""A classifier process: bounce reports in, their classification out, one at a time.

    python -m mailer.worker.classifier_process SECONDS

Started, fed and killed by mailer.worker.classifiers: whatever a hostile report costs, it
costs this process, never the service's event loop. On standard input, each report is a
4-byte big-endian length and that many bytes; on standard output, first an empty frame
(ready), then for each report its Report as JSON, framed the same way.

It runs at a lower priority than the service, ignores SIGINT and SIGTERM (the service ends
it), may use at most MEMORY_LIMIT bytes, and at most twice SECONDS of CPU per report beyond
what it used before: past that the kernel ends it (SIGXCPU), even when no service is left to.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import sys
import traceback
from typing import BinaryIO

from mailer.core.bounces.kinds import Kind, Report
from mailer.core.bounces.reports import classify_report
from mailer.core.report_codec import report_to_json

MEMORY_LIMIT = 512 * 1024 * 1024
PRIORITY = 10  # nice(1): the service's own process comes first


def _limit_cpu(seconds: float) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + 2 * seconds) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _frame(out: BinaryIO, data: bytes) -> None:
    out.write(len(data).to_bytes(4, "big") + data)
    out.flush()


def _read(source: BinaryIO, size: int) -> bytes | None:
    data = source.read(size)
    return data if len(data) == size else None


def serve(source: BinaryIO, out: BinaryIO, seconds: float) -> None:
    _frame(out, b"")  # ready
    while (header := _read(source, 4)) is not None:
        raw = _read(source, int.from_bytes(header, "big"))
        if raw is None:
            return
        _limit_cpu(seconds)
        try:
            report = classify_report(raw)
        except MemoryError:
            megabytes = MEMORY_LIMIT // (1024 * 1024)
            report = Report(Kind.UNPARSEABLE, f"it needs more than {megabytes} MB to read", "none")
        except Exception as error:  # a bug, or input nothing expected: said, and kept alive
            traceback.print_exc()
            reason = f"classification failed: {type(error).__name__}"
            report = Report(Kind.UNPARSEABLE, reason, "none")
        _frame(out, report_to_json(report))


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(PRIORITY)
    _, most = resource.getrlimit(resource.RLIMIT_AS)
    memory = MEMORY_LIMIT if most == resource.RLIM_INFINITY else min(MEMORY_LIMIT, most)
    resource.setrlimit(resource.RLIMIT_AS, (memory, most))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # flufl.bounce logs tracebacks for messages it cannot read: the classifier handles those.
    logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)
    # Standard output carries the replies alone: anything printed goes to standard error.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, out, seconds)


if __name__ == "__main__":
    main()
