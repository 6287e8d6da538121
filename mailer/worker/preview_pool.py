"""Where the console renders previews and test sends: processes of their own, so that a heavy
job (a 123 KB one takes about half a second) never holds the event loop that serves
everyone else, and every rendering is bounded.

- `processes` render at once (the pool's size); `WAITING` more may wait for one; beyond
  that a request is refused at once (`PreviewsBusy`) rather than queued without end;
- a rendering that takes over `seconds` has its process ended and replaced
  (`PreviewTooCostly`), and so does one that needs over `MEMORY` of address space;
- the job itself is bounded before it gets here (the console takes at most 200 KiB).

The processes are started from a fresh interpreter (spawn, not fork: the service has threads
and open connections) on the first preview, and each reads the templates once.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import resource
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from pebble import ProcessExpired, ProcessPool

from mailer.core.audience import MailingList
from mailer.core.locales import Locale
from mailer.core.messages import Mailbox
from mailer.core.rendering import Rendered, Renderer
from mailer.core.trials import PreviewsBusy, PreviewTooCostly, TestSend, TrialResult
from mailer.worker.previews import (
    Trial,
    prepare_trial,
    read_issue,
    render_all,
    send_tests,
    test_addresses,
)
from mailer.worker.sending import Sender

log = logging.getLogger(__name__)
WAITING = 4  # renderings that may wait for a process, per process
MEMORY = 1024 * 1024 * 1024  # address space of one rendering process, bytes
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PreviewSetup:
    """What a rendering process needs, sent to it once when it starts."""

    lists: Mapping[str, MailingList]
    templates_dir: Path
    max_attachment_bytes: int
    public_url: str


@dataclass(frozen=True, slots=True)
class _Renderer:
    setup: PreviewSetup
    renderer: Renderer


# In a rendering process only: set once by _begin, read by each task it runs.
_in_process: list[_Renderer] = []


def _begin(setup: PreviewSetup) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = MEMORY if hard == resource.RLIM_INFINITY else min(MEMORY, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    _in_process.append(_Renderer(setup, Renderer(setup.templates_dir)))


def _preview(body: bytes, name: str | None) -> dict[Locale, Rendered]:
    state = _in_process[0]
    setup = state.setup
    issue = read_issue(body, setup.lists, max_attachment_bytes=setup.max_attachment_bytes)
    return render_all(issue, state.renderer, name=name, public_url=setup.public_url)


def _trial(body: bytes, recipients: Sequence[Mailbox], locale: Locale | None) -> Trial:
    state = _in_process[0]
    setup = state.setup
    issue = read_issue(body, setup.lists, max_attachment_bytes=setup.max_attachment_bytes)
    return prepare_trial(
        issue, state.renderer, recipients, locale=locale, public_url=setup.public_url
    )


class PreviewPool:
    def __init__(self, setup: PreviewSetup, *, processes: int, seconds: float) -> None:
        self._setup = setup
        self._processes = processes
        self._seconds = seconds
        self._most = processes * (1 + WAITING)
        self._in_hand = 0  # rendering or waiting
        self._pool: ProcessPool | None = None

    def _started(self) -> ProcessPool:
        if self._pool is None:
            self._pool = ProcessPool(
                max_workers=self._processes,
                initializer=_begin,
                initargs=(self._setup,),
                context=multiprocessing.get_context("spawn"),
            )
        return self._pool

    async def _run(self, task: Callable[..., T], *args: Any) -> T:
        if self._in_hand >= self._most:
            raise PreviewsBusy("previews busy, try again in a moment")
        self._in_hand += 1
        try:
            future = self._started().schedule(task, args=args, timeout=self._seconds)
            return await asyncio.wrap_future(future)
        except TimeoutError:
            log.warning("a preview took over %g s; its process was ended", self._seconds)
            raise PreviewTooCostly(
                f"rendering took over {self._seconds:g} s: the job is too heavy to preview"
            ) from None
        except (ProcessExpired, MemoryError):
            log.warning("a preview's process ended (over %d MiB?)", MEMORY // 2**20)
            raise PreviewTooCostly("rendering needed more memory than a preview may use") from None
        finally:
            self._in_hand -= 1

    async def preview(self, body: bytes, name: str | None) -> dict[Locale, Rendered]:
        """The issue as a subscriber greeted by `name` gets it, in every locale."""
        return await self._run(_preview, body, name)

    async def trial(
        self, body: bytes, recipients: Sequence[Mailbox], locale: Locale | None
    ) -> Trial:
        return await self._run(_trial, body, list(recipients), locale)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.stop()  # type: ignore[no-untyped-call]
            await asyncio.to_thread(pool.join)


def pool_test_sender(
    pool: PreviewPool, sender: Sender, *, public_url: str, clock: Callable[[], datetime]
) -> TestSend:
    """The console's test send: rendered in the pool, then composed, signed and sent here."""

    async def send(body: bytes, texts: Sequence[str], locale: Locale | None) -> list[TrialResult]:
        recipients = test_addresses(texts)
        trial = await pool.trial(body, recipients, locale)
        return await send_tests(trial, sender, recipients, public_url=public_url, clock=clock)

    return send
