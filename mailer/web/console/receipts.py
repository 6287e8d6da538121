"""Receipts, and the confirmations of subscriptions (both sent one at a time): recent by
outcome, those retrying, a job id or a typed address looked up (hashed with the ledger key,
never stored or echoed)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from mailer.core.addresses import InvalidAddress, typed_address_key
from mailer.core.deliveries import READING_ORDER, DeliveryStatus
from mailer.web.console.kit import Pages, Route, get, post


class ReceiptPages(Pages):
    def routes(self) -> list[Route]:
        return [
            get("/receipts", self._receipts, api=True),
            post("/receipts", self._receipts),  # a typed address travels in the body only
        ]

    async def _receipts(self, request: web.Request) -> web.Response:
        views = self._c.views
        query = request.query
        job: UUID | None = None
        error = None
        recipient_key = None
        looked_up = None
        if query.get("job"):
            try:
                job = UUID(query["job"].strip())
            except ValueError:
                error = "not a job id (a UUID)"
        if request.method == "POST":
            form = await self._form(request)
            typed = form.get("address")
            if isinstance(typed, str) and typed.strip():
                try:
                    recipient_key = typed_address_key(self._c.hash_key, typed)
                except (InvalidAddress, ValueError):
                    error = "not an e-mail address"
                else:
                    looked_up = "the address typed"  # never echoed back, never stored
        status = query.get("status") if query.get("status") in READING_ORDER else None
        now = await views.now()
        if job is not None or recipient_key is not None:
            found = await views.receipts(job_id=job, recipient_key=recipient_key, limit=100)
            retrying = []
        else:
            found = await views.receipts(status=status, limit=50)
            retrying = await views.receipts(status=DeliveryStatus.RETRYING, limit=50)
        counts = await views.receipt_counts(24)
        data: dict[str, Any] = {
            "measured_at": now,
            "counts": counts,
            "receipts": found,
            "retrying": retrying,
            "job": job,
            "status": status,
        }
        return self._answer(request, "receipts.html.j2", data, error=error, looked_up=looked_up)
