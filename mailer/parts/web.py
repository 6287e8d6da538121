"""The public listener as a part: the recipients' pages, /healthz and /readyz."""

from __future__ import annotations

from mailer.parts.listener import ListenerPart
from mailer.web.public.app import WebServer


class PublicWeb(ListenerPart[WebServer]):
    name = "public web"
    section = "http"
