"""What takes the events of the outbox to the portal, built from the settings: the relay
onto `mailer.events` (mailer/parts/events.py), in every worker process. Webhook dispatch,
which reads the same outbox by position, is built here too, beside it."""

from __future__ import annotations

from mailer.adapters.broker import Broker
from mailer.config import Settings
from mailer.metrics import Metrics
from mailer.parts import Part
from mailer.parts.events import EventRelay


def event_parts(settings: Settings, broker: Broker, metrics: Metrics) -> list[Part]:
    """In start order; each is started after the worker's broker connection."""
    relay = EventRelay(
        settings.database.url.get_secret_value(),
        broker.publish_event,
        settings.events,
        metrics,
    )
    return [relay]
