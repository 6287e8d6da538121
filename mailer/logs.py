"""Logging: one line per event, `key=value` fields, UTC timestamps.

Addresses never appear in clear: code logs `address_ref(key)` (a prefix of the keyed hash
the ledger stores), which lets an operator find the row without exposing the person.

Every record is one line that starts at the first column; what follows it (a traceback) is
indented. Values from outside (a message id, a header, a queue name from a header, a job
id, an exception's text) reach log lines in many places, so the escaping is done once, here,
for every record: CR, LF, NEL, other control characters, U+2028/U+2029 and bidirectional
overrides in the message are written as escapes (core/terminal.py), so no value can end a
line and forge the next one.
"""

from __future__ import annotations

import logging
import sys
import time

from mailer.core.terminal import one_line

CONTINUATION = "  "  # before each line of a traceback or stack: never a record's start


class LineFormatter(logging.Formatter):
    """`logging.Formatter` whose records are each one line, their values escaped."""

    def converter(self, seconds: float | None) -> time.struct_time:
        return time.gmtime(seconds)

    def format(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        extra = []
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            extra.append(record.exc_text)
        if record.stack_info:
            extra.append(self.formatStack(record.stack_info))
        for text in extra:
            line += "".join(f"\n{CONTINUATION}{one_line(part)}" for part in text.split("\n"))
        return line


def formatter() -> LineFormatter:
    return LineFormatter(
        "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter that would drown the events that matter.
    for noisy in ("aio_pika", "aiosmtpd", "mail.log", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # aiormq reports every failed connection attempt as an error; ours say it once, clearly.
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
