"""The console's pages and JSON API, one module per area, server-rendered (Jinja2,
autoescaped); a small script of our own refreshes the live parts, and every page works
without it.

Every action (pause, resume, cancel, requeue, purge, lift or add a suppression, test send,
disable, enable or replay a webhook endpoint)
needs the operator role and is audited with its result, refusals too; each asks for a
confirmation first, but a test send, whose form names the few addresses it goes to.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from mailer.web.console.audit import AuditPages
from mailer.web.console.auth import Guard
from mailer.web.console.bounces import BouncePages
from mailer.web.console.context import Console
from mailer.web.console.dead_letters import DeadLetterPages
from mailer.web.console.issues import IssuePages
from mailer.web.console.kit import templates
from mailer.web.console.login import LoginPages
from mailer.web.console.overview import OverviewPages
from mailer.web.console.previews import PreviewPages
from mailer.web.console.receipts import ReceiptPages
from mailer.web.console.suppressions import SuppressionPages
from mailer.web.console.webhooks import WebhookPages

STATIC = {"console.css": "text/css", "console.js": "text/javascript"}
AREAS = (
    LoginPages,
    OverviewPages,
    IssuePages,
    ReceiptPages,
    DeadLetterPages,
    SuppressionPages,
    BouncePages,
    WebhookPages,
    PreviewPages,
    AuditPages,
)


class ConsolePages:
    def __init__(self, console: Console, guard: Guard, templates_dir: Path) -> None:
        env = templates(templates_dir)
        self._areas = [area(console, guard, env) for area in AREAS]
        folder = templates_dir / "_console"
        self._static = {name: (folder / name).read_bytes() for name in STATIC}

    def add_routes(self, app: web.Application) -> None:
        for area in self._areas:
            area.add_routes(app)
        for name in STATIC:
            app.router.add_get(f"/static/{name}", self._static_file)

    async def _static_file(self, request: web.Request) -> web.Response:
        name = request.path.rsplit("/", 1)[1]
        return web.Response(
            body=self._static[name],
            content_type=STATIC[name],
            headers={"Cache-Control": "max-age=300"},
        )
