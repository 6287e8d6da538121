"""Dead letters (the parked_jobs table): list and inspect with addresses masked, which
reads the table and changes nothing; requeue or purge one, a selection or all, streamed one
job at a time."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from mailer.errors import MailerError
from mailer.web.console.auth import SESSION_KEY, source_of
from mailer.web.console.kit import Pages, Route, get, json_response, post, stream_headers
from mailer.web.console.masking import mask_text, masked_headers, pretty_body

DEAD_ACTIONS = ("requeue", "purge")
DEAD_SHOWN = 200


class DeadLetterPages(Pages):
    def routes(self) -> list[Route]:
        return [
            get("/dead", self._dead, api=True),
            get("/dead/{ref}", self._dead_one),
            post("/dead/{action}", self._dead_action, api=True),
        ]

    async def _dead(self, request: web.Request) -> web.Response:
        now = datetime.now(UTC)
        rows = [
            {
                "ref": row.ref,
                "job_id": row.job_id,
                "origin": row.origin,
                "reason": mask_text(row.reason),
                "parked_at": row.parked_at,
                "delivery_count": row.deliveries,
                "size": row.size,
            }
            for row in await self._c.parked.first(DEAD_SHOWN)
        ]
        if self._api(request):
            return json_response({"measured_at": now, "parked": rows, "shown_at_most": DEAD_SHOWN})
        return self._render(request, "dead.html.j2", parked=rows, measured_at=now, limit=DEAD_SHOWN)

    async def _dead_one(self, request: web.Request) -> web.Response:
        job = await self._c.parked.one(request.match_info["ref"])
        if job is None:
            raise web.HTTPNotFound(text="no such parked job")
        properties = {k: v for k, v in job.properties.items() if k != "headers"}
        return self._render(
            request,
            "dead_one.html.j2",
            ref=job.ref,
            view=job,
            reason=mask_text(job.reason),
            properties=masked_headers(properties),
            headers=masked_headers(job.headers),
            body=pretty_body(job.body),
        )

    async def _dead_action(self, request: web.Request) -> web.StreamResponse:
        action = request.match_info["action"]
        if action not in DEAD_ACTIONS:
            raise web.HTTPNotFound(text="no such action")
        form = await self._form(request)
        api = self._api(request)
        every = form.get("all") in ("yes", True)
        raw = form.get("refs") or []
        refs = {str(r) for r in raw} if isinstance(raw, list) else set()
        if not every and not refs:
            raise web.HTTPBadRequest(text="choose parked jobs, or all")
        target = "all" if every else ",".join(sorted(refs))[:500]
        await self._operator(request, f"dead {action}", target)
        if not api and form.get("confirm") != "yes":
            what = "every parked job" if every else f"{len(refs)} parked job(s)"
            verb = "Send back to its origin queue" if action == "requeue" else "Delete for good"
            return self._render(
                request,
                "confirm.html.j2",
                question=f"{verb}: {what}?",
                action_url=request.path,
                fields={"all": "yes"} if every else {},
                refs=sorted(refs),
                button=action,
                back="/dead",
            )
        session = request[SESSION_KEY]
        response = web.StreamResponse(
            headers={"Content-Type": "application/x-ndjson" if api else "text/html"}
        )
        if not api:
            response.headers.update(stream_headers())
        await response.prepare(request)
        if not api:
            head = self._env.get_template("stream_head.html.j2")
            await response.write(head.render(action=action).encode())
        summary = await self._settle(response, action, None if every else refs, api=api)
        self._c.fresh.forget()
        await self._c.operators.audit(
            session.operator.name,
            f"dead {action}",
            target=target,
            result=summary["result"],
            detail=summary["detail"],
            source=source_of(request),
        )
        if api:
            await response.write((json.dumps(summary) + "\n").encode())
        else:
            tail = self._env.get_template("stream_tail.html.j2")
            await response.write(tail.render(**summary).encode())
        await response.write_eof()
        return response

    async def _settle(
        self, response: web.StreamResponse, action: str, refs: set[str] | None, *, api: bool
    ) -> dict[str, Any]:
        """Settle one job at a time, writing a line for each as it is done."""
        row = self._env.get_template("stream_row.html.j2")
        done = left = 0
        try:
            async for parked, settled in self._c.dead_letters.settle(action, refs):
                done += settled
                left += not settled
                line = {
                    "ref": parked.ref,
                    "job_id": parked.job_id,
                    "origin": parked.origin,
                    "action": action,
                    "done": settled,
                }
                text = json.dumps(line) + "\n" if api else row.render(**line)
                await response.write(text.encode())
        except (MailerError, OSError, RuntimeError) as exc:
            result, detail = "failed", f"{done} {action}d, then: {exc}"
        else:
            result, detail = (
                "done",
                f"{done} {action}d" + (f", {left} left in place (no known origin)" if left else ""),
            )
        return {"done": done, "left": left, "result": result, "detail": detail}
