"""⑤ compose ─► ⑥ sign ─► relay ─► ⑦ classify, for one message: the stages every kind of
mail shares. Receipts and newsletters differ only in the composer (the standard library's,
or the direct writer for the per-recipient hot path) and in the relay pool they use."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from mailer.adapters.relay import Relay
from mailer.core.messages import Draft
from mailer.core.outcomes import Outcome, classify, transport_failure
from mailer.core.signing import Signer
from mailer.errors import RelayUnavailable, TemporaryFailure
from mailer.metrics import Metrics

Composer = Callable[[Draft], bytes]


class Sender:
    def __init__(
        self,
        *,
        kind: str,
        composer: Composer,
        signer: Signer,
        relay: Relay,
        return_path: str | None,
        metrics: Metrics,
    ) -> None:
        self._kind = kind
        self._compose = composer
        self._signer = signer
        self._relay = relay
        self._return_path = return_path
        self._metrics = metrics

    async def send(
        self, draft: Draft, now: datetime, still_wanted: Callable[[], bool] | None = None
    ) -> Outcome:
        """Raises ShuttingDown once the relay is closing, and Withdrawn when `still_wanted`
        says no at the last moment: both before anything is sent."""
        message = self._signer.sign(self._compose(draft), int(now.timestamp()))
        envelope_sender = self._return_path or draft.sender.address
        with self._metrics.smtp_seconds.labels(self._kind).time():
            try:
                reply = await self._relay.send(
                    envelope_sender, draft.to.address, message, still_wanted
                )
            except RelayUnavailable as exc:
                return transport_failure(str(exc), relay_fault=True)
            except TemporaryFailure as exc:
                return transport_failure(str(exc))
        return classify(reply)
