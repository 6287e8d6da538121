"""Logging: one line per event, `key=value` fields, UTC timestamps.

Addresses never appear in clear: code logs `address_ref(key)` (a prefix of the keyed hash
the ledger stores), which lets an operator find the row without exposing the person.
"""

from __future__ import annotations

import logging
import sys
import time


class _UTCFormatter(logging.Formatter):
    def converter(self, seconds: float | None) -> time.struct_time:
        return time.gmtime(seconds)


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _UTCFormatter(
            "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter that would drown the events that matter.
    for noisy in ("aio_pika", "aiosmtpd", "mail.log", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # aiormq reports every failed connection attempt as an error; ours say it once, clearly.
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
