"""The webhook dispatcher as a part (mailer/worker/webhooks.py): in every worker process,
its HTTP client opened at start, its claim loop run until the stop; at a stop the batches
in flight get a short grace, then their leases are given back."""

from __future__ import annotations

from mailer.adapters.webhook_client import WebhookClient
from mailer.parts import Checks
from mailer.parts.loops import Loops
from mailer.worker.webhooks import WebhookDispatcher

STOP_GRACE = 2.0  # seconds for the batches in flight to finish at a stop


class WebhookDelivery:
    name = "webhooks"

    def __init__(self, dispatcher: WebhookDispatcher, client: WebhookClient) -> None:
        self.dispatcher = dispatcher
        self._client = client
        self._loops = Loops()

    async def start(self) -> None:
        await self._client.start()
        self._loops.run(self.dispatcher.run, "webhook claims")

    async def stop(self) -> None:
        await self._loops.end()
        await self.dispatcher.stop(STOP_GRACE)
        await self._client.close()

    async def readiness(self) -> Checks:
        return {}
