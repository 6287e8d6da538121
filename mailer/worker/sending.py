"""⑤ compose ─► ⑥ sign ─► relay ─► ⑦ classify, for one message: the stages every kind of
mail shares, with one composer (mailer's own writer). Receipts and newsletters differ only in
the relay pool they use.

A message is composed, signed and made transparent for DATA only once a relay connection is
held, so no more messages are built at once than the pools have connections, whatever the
prefetch. A large one (its attachments and parts over `large_message_bytes`) is built in a
thread, so that the tens of milliseconds of base64, canonicalization and hashing per megabyte
do not stop the event loop, and one at a time, so that their transient copies do not add up.
Every step of that build works a slice at a time (see core/lines.py), so the thread never
holds the GIL for long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime

from mailer.adapters.relay import MessageTooLarge, Relay
from mailer.core.messages import Draft
from mailer.core.outcomes import Failed, Outcome, classify, transport_failure
from mailer.core.signing import Signer
from mailer.core.wire import DataSection, data_section
from mailer.errors import RelayUnavailable, TemporaryFailure
from mailer.metrics import Metrics
from mailer.worker.verdicts import Verdict

Composer = Callable[[Draft], bytes]
# The envelope sender (VERP return path) of one delivery sent on a day.
ReturnPaths = Callable[[int, date], str]
LARGE_MESSAGE_BYTES = 256 * 1024


def draft_weight(draft: Draft) -> int:
    """Roughly the bytes a draft becomes before encoding: its parts and attachments."""
    content = draft.content
    return (
        len(content.html)
        + len(content.text)
        + sum(len(attachment.content) for attachment in draft.attachments)
    )


@dataclass(eq=False, repr=False, kw_only=True)
class Sender:
    kind: str
    composer: Composer
    signer: Signer
    relay: Relay
    return_path: str | None
    metrics: Metrics
    large_message_bytes: int = LARGE_MESSAGE_BYTES
    return_paths: ReturnPaths | None = None
    # One large message built at a time: the build holds the GIL for most of its time, so
    # building several at once would only multiply the transient copies (about six times
    # the message's size) without finishing any sooner.
    _large_builds: asyncio.Semaphore = field(
        init=False, default_factory=lambda: asyncio.Semaphore(1)
    )

    async def send(
        self,
        draft: Draft,
        now: datetime,
        still_wanted: Callable[[], bool] | None = None,
        *,
        delivery_id: int | None = None,
    ) -> Outcome:
        """Raises ShuttingDown once the relay is closing, and Withdrawn when `still_wanted`
        says no at the last moment: both before anything is sent. A message over the relay's
        SIZE is a permanent failure that says so (not the recipient's fault: no suppression).

        With return paths configured, the envelope sender is the delivery's own signed
        return path and the delivery id its DSN envelope id; else [sender] return_path or
        the From address."""
        envelope_id: str | None = None
        if self.return_paths is not None and delivery_id is not None:
            envelope_sender = self.return_paths(delivery_id, now.date())
            envelope_id = str(delivery_id)
        else:
            envelope_sender = self.return_path or draft.sender.address
        try:
            async with self.relay.session(still_wanted) as session:
                message = await self._build(draft, int(now.timestamp()))
                with self.metrics.smtp_seconds.labels(self.kind).time():
                    reply = await session.send(
                        envelope_sender, draft.to.address, message, envelope_id
                    )
        except MessageTooLarge as exc:
            return Failed(str(exc), suppress=False)
        except RelayUnavailable as exc:
            return transport_failure(str(exc), relay_fault=True)
        except TemporaryFailure as exc:
            return transport_failure(str(exc))
        return classify(reply)

    async def _build(self, draft: Draft, timestamp: int) -> DataSection:
        if draft_weight(draft) > self.large_message_bytes:
            async with self._large_builds:
                return await asyncio.to_thread(self._ready, draft, timestamp)
        return self._ready(draft, timestamp)

    def _ready(self, draft: Draft, timestamp: int) -> DataSection:
        """Composed, signed and made transparent for DATA."""
        return data_section(self.signer.sign(self.composer(draft), timestamp))


def few_large_jobs(
    deliver: Callable[[bytes], Awaitable[Verdict]], *, slots: int, threshold: int
) -> Callable[[bytes], Awaitable[Verdict]]:
    """`deliver` for at most `slots` jobs over `threshold` bytes at once; the others wait
    as they arrived, raw, before they are decoded. The prefetch bounds how many raw jobs
    are in hand; this bounds how many are also decoded and built (about 7 times their size)."""
    large = asyncio.Semaphore(slots)

    async def bounded(body: bytes) -> Verdict:
        if len(body) <= threshold:
            return await deliver(body)
        async with large:
            return await deliver(body)

    return bounded
