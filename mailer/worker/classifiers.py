"""Bounce reports classified in processes of mailer's own, each report within a time limit.

Classifying is CPU work on input anyone holding one of our return paths can write. In the
service's process it would hold the GIL and stall the event loop (pages, the receiver,
sending); in a thread of the default executor it could not be stopped. Here each report
goes to a classifier process (mailer.worker.classifier_process) over a pipe, and the event
loop only waits for the answer. A report not classified within `timeout` seconds gets its
process killed (a new one starts for the next report) and ends `unparseable`, with that
reason; so does one whose process dies on it. `close()` kills them all at once, so a stop
never waits for a report: one cut off so is classified again after the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from mailer.core.bounces.kinds import Kind, Report
from mailer.core.report_codec import report_from_json
from mailer.errors import TemporaryFailure

log = logging.getLogger(__name__)
START_TIMEOUT = 30.0  # seconds for a new classifier process to be ready
KEPT = "the report is kept as received (mailer bounces show ID --raw)"


class ClassifierStopped(Exception):
    """The pool was closed (the service is stopping) before the report was classified."""


def over_time(timeout: float) -> Report:
    reason = f"classification took longer than {timeout:g} s, its limit: given up; {KEPT}"
    return Report(Kind.UNPARSEABLE, reason, "none")


def died(returncode: int | None) -> Report:
    if returncode is not None and returncode < 0:
        name = signal.Signals(-returncode).name
        how = f"{name}: over its CPU limit" if name == "SIGXCPU" else name
    else:
        how = f"exit status {returncode}"
    reason = f"the classifier process ended while reading it ({how}): given up; {KEPT}"
    return Report(Kind.UNPARSEABLE, reason, "none")


class _Child:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        self._stdin = process.stdin
        self._stdout = process.stdout

    async def read_frame(self) -> bytes:
        size = int.from_bytes(await self._stdout.readexactly(4), "big")
        return await self._stdout.readexactly(size)

    async def ask(self, raw: bytes) -> bytes:
        self._stdin.write(len(raw).to_bytes(4, "big") + raw)
        await self._stdin.drain()
        return await self.read_frame()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    async def ended(self) -> int:
        returncode: int = await self.process.wait()
        return returncode

    async def end(self, *, grace: float) -> int:
        """Its exit status: it is given `grace` seconds to end by itself (one that closed its
        pipe is ending, and a kill now would reap it before its status is read), then killed."""
        try:
            return await asyncio.wait_for(asyncio.shield(self.ended()), grace)
        except TimeoutError:
            self.kill()
            return await self.ended()


class ClassifierPool:
    def __init__(
        self,
        *,
        processes: int = 1,
        timeout: float = 5.0,
        command: Sequence[str] | None = None,
    ) -> None:
        self.processes = processes
        self.timeout = timeout
        self._command = list(command or [sys.executable, "-m", "mailer.worker.classifier_process"])
        self._slots = asyncio.Semaphore(processes)
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._reaping: set[asyncio.Future[int]] = set()
        self._closed = False
        self.started = 0  # processes started so far (a new one after each kill)

    @property
    def closed(self) -> bool:
        return self._closed

    async def classify(self, raw: bytes) -> Report:
        """The report's classification; ClassifierStopped once the pool is closed."""
        async with self._slots:
            if self._closed:
                raise ClassifierStopped
            child = self._idle.pop() if self._idle else await self._start()
            self._busy.add(child)
            try:
                answer = await asyncio.wait_for(child.ask(raw), self.timeout)
                report = report_from_json(answer)
            except TimeoutError:
                child.kill()
                await child.ended()
                return over_time(self.timeout)
            except (asyncio.IncompleteReadError, ConnectionError, ValueError):
                returncode = await child.end(grace=1.0)
                if self._closed:
                    raise ClassifierStopped from None
                return died(returncode)
            except BaseException:  # cancelled mid-report: its process is in an unknown state
                child.kill()
                self._reaping.add(asyncio.ensure_future(child.ended()))
                raise
            finally:
                self._busy.discard(child)
            self._idle.append(child)
            return report

    async def _start(self) -> _Child:
        """A new classifier process, ready; TemporaryFailure when none can be started (the
        report waits for the sweep: it is not its fault)."""
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command,
                f"{self.timeout:g}",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        except OSError as error:
            raise TemporaryFailure(f"cannot start a classifier process: {error}") from None
        child = _Child(process)
        self.started += 1
        try:
            await asyncio.wait_for(child.read_frame(), START_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError) as error:
            child.kill()
            await child.ended()
            raise TemporaryFailure(
                f"a classifier process did not start: {type(error).__name__}"
            ) from None
        except BaseException:
            child.kill()
            await child.ended()
            raise
        return child

    async def close(self) -> None:
        """Kill every classifier process now; reports in hand raise ClassifierStopped."""
        self._closed = True
        children = [*self._idle, *self._busy]
        self._idle.clear()
        for child in children:
            child.kill()
        await asyncio.gather(*(child.ended() for child in children), *self._reaping)
        self._reaping.clear()
