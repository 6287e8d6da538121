"""An issue job pasted and seen before it is enqueued: subject, HTML and text in each locale,
rendered as mailer/worker/previews.py renders them for `mailer issue preview`.

The HTML is shown in an iframe with no sandbox permissions (no script, no form, no same
origin), served on its own with a policy that lets it load nothing from anywhere (remote
images included: the operator's browser fetches no tracking pixel), and kept in memory a
few minutes only."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from mailer.core.rendering import LOCALES, Locale, Rendered
from mailer.errors import InvalidJob
from mailer.web.console.kit import Pages, stream_headers
from mailer.web.listener import CONSOLE_POLICY

KEPT_SECONDS = 600.0
MAX_KEPT = 20
MAX_PASTE = 200 * 1024
# The page framing the preview: the console's own policy, and frames from itself.
PAGE_POLICY = CONSOLE_POLICY + "; frame-src 'self'"
FRAME_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:;"
    " form-action 'none'; base-uri 'none'; frame-ancestors 'self'; sandbox"
)


@dataclass(frozen=True, slots=True)
class Shown:
    at: float
    rendered: dict[Locale, Rendered]


class PreviewPages(Pages):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kept: dict[str, Shown] = {}

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/preview", self._preview)
        r.add_post("/preview", self._preview)
        r.add_get("/preview/{id}/{locale}", self._frame)

    def _forget_old(self) -> None:
        now = time.monotonic()
        for key, shown in list(self._kept.items()):
            if now - shown.at > KEPT_SECONDS:
                del self._kept[key]
        while len(self._kept) >= MAX_KEPT:
            del self._kept[next(iter(self._kept))]

    async def _preview(self, request: web.Request) -> web.StreamResponse:
        error = None
        shown_id = None
        rendered: dict[Locale, Rendered] = {}
        pasted = ""
        name = ""
        if request.method == "POST":
            form = await self._form(request)
            pasted = str(form.get("job", ""))
            name = str(form.get("name", "")).strip()[:200]
            if self._c.preview is None:
                error = "previews are not available in this process"
            elif len(pasted.encode()) > MAX_PASTE:
                error = f"the job is over {MAX_PASTE // 1024} KiB"
            else:
                try:
                    for locale in LOCALES:
                        rendered[locale] = self._c.preview(pasted.encode(), locale, name or None)
                except InvalidJob as exc:
                    error = f"not a valid issue: {exc.reason}"
                    rendered = {}
            if rendered:
                self._forget_old()
                shown_id = secrets.token_urlsafe(16)
                self._kept[shown_id] = Shown(time.monotonic(), rendered)
        response = self._render(
            request,
            "preview.html.j2",
            http_status=400 if error else 200,
            error=error,
            pasted=pasted,
            name=name,
            shown_id=shown_id,
            rendered=rendered,
        )
        # its own policy (frames from itself), so sent as it is: the middleware's would replace it
        streamed = web.StreamResponse(
            status=response.status,
            headers={
                **stream_headers(),
                "Content-Security-Policy": PAGE_POLICY,
                "Content-Type": "text/html; charset=utf-8",
            },
        )
        await streamed.prepare(request)
        assert response.body is not None and isinstance(response.body, bytes)
        await streamed.write(response.body)
        await streamed.write_eof()
        return streamed

    async def _frame(self, request: web.Request) -> web.StreamResponse:
        shown = self._kept.get(request.match_info["id"])
        locale = request.match_info["locale"]
        if shown is None or time.monotonic() - shown.at > KEPT_SECONDS:
            raise web.HTTPNotFound(text="no such preview (they are kept for 10 minutes)")
        if locale not in shown.rendered:
            raise web.HTTPNotFound(text="no such locale")
        body = shown.rendered[locale].html.encode()
        streamed = web.StreamResponse(
            headers={
                **stream_headers(),
                "Content-Security-Policy": FRAME_POLICY,
                "X-Frame-Options": "SAMEORIGIN",
                "Content-Type": "text/html; charset=utf-8",
            }
        )
        await streamed.prepare(request)
        await streamed.write(body)
        await streamed.write_eof()
        return streamed
