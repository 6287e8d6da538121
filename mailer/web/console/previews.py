"""An issue job pasted and seen before it is enqueued: subject, HTML and text in each locale,
rendered as mailer/worker/previews.py renders them for `mailer issue preview`.

The HTML is shown in an iframe with no sandbox permissions (no script, no form, no same
origin), served on its own with a policy that lets it load nothing from anywhere (remote
images included: the operator's browser fetches no tracking pixel), and kept in memory a
few minutes only. Rendering is done in a process of its own, bounded in number and time
(mailer/worker/preview_pool.py): a busy pool answers 503 "previews busy", at once.

A test send (operators only, audited) goes to the few addresses typed in its form and marked
as a test (mailer/worker/previews.py): the form itself is the confirmation."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from mailer.core.addresses import mask_address
from mailer.core.locales import LOCALES, Locale
from mailer.core.outcomes import Sent
from mailer.core.rendering import Rendered
from mailer.core.trials import PreviewsBusy, PreviewTooCostly, TrialResult
from mailer.errors import InvalidJob
from mailer.web.console.kit import Pages, Route, get, json_response, post, stream_headers
from mailer.web.listener import CONSOLE_POLICY

KEPT_SECONDS = 600.0
MAX_KEPT = 20
MAX_PASTE = 200 * 1024
BUSY_RETRY_AFTER = "5"  # seconds, when previews are busy
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

    def routes(self) -> list[Route]:
        return [
            get("/preview", self._preview),
            post("/preview", self._preview),
            get("/preview/{id}/{locale}", self._frame),
            post("/preview/test", self._test, api=True),
        ]

    def _forget_old(self) -> None:
        now = time.monotonic()
        for key, shown in list(self._kept.items()):
            if now - shown.at > KEPT_SECONDS:
                del self._kept[key]
        while len(self._kept) >= MAX_KEPT:
            del self._kept[next(iter(self._kept))]

    async def _show(
        self, pasted: str, name: str
    ) -> tuple[int, str | None, str | None, dict[Locale, Rendered]]:
        """(HTTP status, error, the id its frames are kept under, the rendering in each
        locale). The rendering is done away from the event loop, and bounded
        (mailer/worker/preview_pool.py): beyond the bound, 503 and "previews busy"."""
        if self._c.preview is None:
            return 400, "previews are not available in this process", None, {}
        if len(pasted.encode()) > MAX_PASTE:
            return 400, f"the job is over {MAX_PASTE // 1024} KiB", None, {}
        try:
            rendered = await self._c.preview(pasted.encode(), name or None)
        except InvalidJob as exc:
            return 400, f"not a valid issue: {exc.reason}", None, {}
        except PreviewTooCostly as exc:
            return 400, str(exc), None, {}
        except PreviewsBusy as exc:
            return 503, str(exc), None, {}
        self._forget_old()
        shown_id = secrets.token_urlsafe(16)
        self._kept[shown_id] = Shown(time.monotonic(), rendered)
        return 200, None, shown_id, rendered

    async def _preview(self, request: web.Request) -> web.StreamResponse:
        status, error, shown_id = 200, None, None
        rendered: dict[Locale, Rendered] = {}
        pasted = name = ""
        if request.method == "POST":
            form = await self._form(request)
            name = _greeted(form)
            uploaded, error = _uploaded(form.get("file"))
            pasted = str(form.get("job", "")) if uploaded is None else uploaded
            if error is None:
                status, error, shown_id, rendered = await self._show(pasted, name)
            else:
                status = 400
        return await self._page(
            request,
            http_status=status,
            error=error,
            pasted=pasted,
            name=name,
            shown_id=shown_id,
            rendered=rendered,
        )

    async def _test(self, request: web.Request) -> web.StreamResponse:
        form = await self._form(request)
        job = form.get("job", "")
        pasted = job if isinstance(job, str) else json.dumps(job)
        addresses = _addresses(form.get("to", ""))
        locale = form.get("locale") or None
        results: list[TrialResult] = []

        async def run() -> str:
            if locale is not None and locale not in LOCALES:
                raise ValueError(f"locale: one of {', '.join(LOCALES)}, or the list's default")
            if self._c.test_send is None:
                raise ValueError("test sends need a relay: none is configured in this process")
            if len(pasted.encode()) > MAX_PASTE:
                raise ValueError(f"the job is over {MAX_PASTE // 1024} KiB")
            results.extend(await self._c.test_send(pasted.encode(), addresses, locale))
            sent = sum(isinstance(r.outcome, Sent) for r in results)
            masked = ", ".join(mask_address(r.address) for r in results)
            return f"{sent} of {len(results)} test message(s) sent ({masked})"

        ok, text = await self._act(request, "test send", _target(pasted), run)
        if self._api(request):
            return json_response(
                {"ok": ok, "detail": text, "results": [_result(r) for r in results]},
                status=200 if ok else 400,
            )
        name = _greeted(form)
        status, error, shown_id, rendered = await self._show(pasted, name)
        return await self._page(
            request,
            http_status=200 if ok else 503 if status == 503 else 400,
            error=error,
            pasted=pasted,
            name=name,
            shown_id=shown_id,
            rendered=rendered,
            test={"ok": ok, "text": text, "results": [_result(r) for r in results]},
            to="\n".join(addresses),
            chosen_locale=locale or "",
        )

    async def _page(
        self, request: web.Request, http_status: int, **values: Any
    ) -> web.StreamResponse:
        values.setdefault("test", None)
        values.setdefault("to", "")
        values.setdefault("chosen_locale", "")
        response = self._render(
            request,
            "preview.html.j2",
            http_status=http_status,
            locales=LOCALES,
            can_test=self._c.test_send is not None,
            **values,
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
        if http_status == 503:
            streamed.headers["Retry-After"] = BUSY_RETRY_AFTER
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


def _greeted(form: Mapping[str, Any]) -> str:
    """The subscriber's name to greet in the preview; empty: none."""
    return str(form.get("name", "")).strip()[:200]


def _uploaded(upload: object) -> tuple[str | None, str | None]:
    """A job file chosen in the form: (its text, or None when none was chosen; an error)."""
    if not isinstance(upload, web.FileField) or not upload.filename:
        return None, None
    data = upload.file.read(MAX_PASTE + 1)
    if len(data) > MAX_PASTE:
        return "", f"the file is over {MAX_PASTE // 1024} KiB"
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return "", f"the file is not UTF-8 text (byte {exc.start + 1} is not)"


def _addresses(value: object) -> list[str]:
    """One address a line (the form), or a list of them (the API)."""
    # split at LF alone: splitlines() would also cut at U+2028 and hide it from the check
    items = value.split("\n") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise web.HTTPBadRequest(text="to: one address a line, or a JSON list of them")
    return [str(item).strip() for item in items if str(item).strip()][:100]


def _target(pasted: str) -> str:
    """The audit log's name for a pasted job: its issue id when it has one."""
    try:
        found = json.loads(pasted)
    except (ValueError, RecursionError):
        return "issue (not JSON)"
    job_id = found.get("id") if isinstance(found, Mapping) else None
    return f"issue {job_id}"[:80] if isinstance(job_id, str) else "issue (no id)"


def _result(result: TrialResult) -> dict[str, str]:
    outcome = result.outcome
    if isinstance(outcome, Sent):
        return {
            "address": result.address,
            "locale": result.locale,
            "sent": "yes",
            "said": str(outcome.reply),
            "message_id": result.message_id,
        }
    return {
        "address": result.address,
        "locale": result.locale,
        "sent": "no",
        "said": outcome.reason,
        "message_id": result.message_id,
    }
