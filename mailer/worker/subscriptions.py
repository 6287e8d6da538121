"""Subscription changes from the portal, applied one at a time in the order published.

The queue has a single active consumer with a prefetch of one, and a change that cannot be
applied yet (the database away) is retried here, holding its place, rather than sent round
a delay queue where a later change for the same address could overtake it.

A subscription without consent (`confirmed: false`) is marked pending and a confirmation
mail goes out through the receipts queue as a transactional message: its link leads to a
page whose button subscribes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime

from mailer.adapters.broker import Broker
from mailer.adapters.jobs import Jobs
from mailer.adapters.subscribers import Subscribers
from mailer.core.addresses import address_key, address_ref
from mailer.core.audience import MailingList
from mailer.core.jobs import CONFIRM_TEMPLATE, SubscriptionJob, decode, payload_digest
from mailer.core.tokens import Subscription, TokenKeys, confirm_token
from mailer.errors import InvalidJob, ShuttingDown, TemporaryFailure
from mailer.worker.verdicts import Done, Verdict

log = logging.getLogger(__name__)
_CONFIRMATION_IDS = uuid.UUID("6f0d4c1e-4a51-4f4e-9f7a-2b8c0f6d9e31")


class SubscriptionChanges:
    def __init__(
        self,
        *,
        subscribers: Subscribers,
        jobs: Jobs,
        broker: Broker,
        lists: Mapping[str, MailingList],
        hash_key: bytes,
        token_keys: TokenKeys,
        public_url: str,
        max_attachment_bytes: int,
        clock: Callable[[], datetime],
    ) -> None:
        self._subscribers = subscribers
        self._jobs = jobs
        self._broker = broker
        self._lists = lists
        self._hash_key = hash_key
        self._token_keys = token_keys
        self._public_url = public_url
        self._max_attachment_bytes = max_attachment_bytes
        self._clock = clock
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def apply(self, body: bytes) -> Verdict:
        job = decode(body, max_attachment_bytes=self._max_attachment_bytes)
        if not isinstance(job, SubscriptionJob):
            raise InvalidJob(f"kind: a {job.kind} job does not belong on the subscriptions queue")
        mailing_list = None
        if job.list is not None:
            mailing_list = self._lists.get(job.list)
            if mailing_list is None:
                raise InvalidJob(f"list: no list {job.list!r} is configured")
        wait = 0.5
        while True:
            try:
                return await self._apply(job, mailing_list)
            except TemporaryFailure as exc:
                if self._stopping.is_set():
                    raise ShuttingDown("the change goes back to the head of its queue") from exc
                log.warning("subscription change %s waits: %s", job.id, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), wait)
                wait = min(wait * 2, 30)

    async def _apply(self, job: SubscriptionJob, mailing_list: MailingList | None) -> Verdict:
        seen = await self._jobs.seen(job.id, "subscription", payload_digest(job))
        if seen == "conflict":
            raise InvalidJob(f"id: {job.id} was already used for a different payload")
        if seen == "done":
            return Done()
        key = address_key(self._hash_key, job.email)
        if job.action == "erase":
            await self._subscribers.erase(key, job.email)
        elif job.action == "unsubscribe":
            assert mailing_list is not None
            await self._subscribers.unsubscribe_address(key, "portal", list_id=mailing_list.id)
        else:
            assert mailing_list is not None
            subscriber_id, before = await self._subscribers.subscribe(
                list_id=mailing_list.id,
                address_key=key,
                email=job.email,
                name=job.name,
                locale=job.locale,
                confirmed=job.confirmed,
            )
            if not job.confirmed and before != "subscribed":
                await self._ask_for_confirmation(job, mailing_list, subscriber_id)
        await self._jobs.mark_done(job.id, "subscription", payload_digest(job))
        log.info("subscription %s %s rcpt=%s", job.action, job.list or "*", address_ref(key))
        return Done()

    async def _ask_for_confirmation(
        self, job: SubscriptionJob, mailing_list: MailingList, subscriber_id: int
    ) -> None:
        """A transactional message on the receipts queue (recorded and logged as a
        confirmation), whose id follows from the job's: applying the change twice sends one
        mail."""
        day = int(self._clock().timestamp() // 86400)
        token = confirm_token(self._token_keys, Subscription(subscriber_id, mailing_list.id), day)
        mail_id = str(uuid.uuid5(_CONFIRMATION_IDS, str(job.id)))
        confirmation = {
            "kind": "receipt",
            "version": 1,
            "id": mail_id,
            "to": {"email": job.email, **({"name": job.name} if job.name else {})},
            "locale": job.locale or mailing_list.default_locale,
            "template": CONFIRM_TEMPLATE,
            "data": {
                "list_name": mailing_list.name,
                "confirm_url": f"{self._public_url}/c/{token}",
            },
        }
        await self._broker.publish(
            json.dumps(confirmation, ensure_ascii=False).encode(),
            routing_key="receipt",
            message_id=mail_id,
        )
