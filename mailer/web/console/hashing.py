"""Password checks off the event loop, a few at a time.

One argon2id check takes 64 MiB and about a core for a few tens of milliseconds (argon2-cffi's
defaults), so they run on threads of their own (argon2 lets go of the GIL), `at_once` at a
time in the whole process, with at most `waiting` more queued behind them; beyond that a
login is told to come back (`Busy`) instead of queueing without end. The login limit decides
who may be checked at all (mailer/adapters/operators.py); this bounds what the checks cost.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future, ThreadPoolExecutor

from mailer.core.passwords import verify_password

AT_ONCE = 2  # of 64 MiB each
WAITING = 16


class Busy(Exception):
    """As many checks are running and waiting as allowed."""


class PasswordChecks:
    def __init__(self, *, at_once: int = AT_ONCE, waiting: int = WAITING) -> None:
        self._executor = ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="argon2")
        self._most = at_once + waiting
        self._in_hand = 0  # waiting or running

    async def verify(self, stored: str | None, password: str) -> bool:
        """verify_password on a thread of the pool; Busy when as many are in hand as
        allowed. A place is free again when its check has ended, not merely when its
        caller stopped waiting."""
        if self._in_hand >= self._most:
            raise Busy
        self._in_hand += 1
        loop = asyncio.get_running_loop()
        future: Future[bool] = self._executor.submit(verify_password, stored, password)
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release))
        return await asyncio.wrap_future(future)

    def _release(self) -> None:
        self._in_hand -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
