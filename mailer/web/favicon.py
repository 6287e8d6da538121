"""The icon browsers ask every site for, `/favicon.ico`: mailer's own (an envelope, 16 and 32
pixels), served by both listeners so that no page's visit ends in a 404."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from aiohttp import web

PATH = "/favicon.ico"


@cache
def icon() -> bytes:
    return (files("mailer.web") / "favicon.ico").read_bytes()


async def _favicon(request: web.Request) -> web.Response:
    return web.Response(
        body=icon(),
        content_type="image/vnd.microsoft.icon",
        headers={"Cache-Control": "public, max-age=86400"},
    )


def add_route(app: web.Application) -> None:
    app.router.add_get(PATH, _favicon)
