"""Logging in and out."""

from __future__ import annotations

from aiohttp import web

from mailer.web.console.kit import Pages, Route, get, post


class LoginPages(Pages):
    def routes(self) -> list[Route]:
        return [
            get("/login", self._login_page),
            post("/login", self._login),
            post("/logout", self._guard.logout),
        ]

    async def _login_page(self, request: web.Request) -> web.Response:
        return self._render(request, "login.html.j2", error=None)

    async def _login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        name, password = form.get("name"), form.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            return self._render(
                request, "login.html.j2", http_status=400, error="name and password"
            )
        try:
            return await self._guard.login(name, password, request)
        except web.HTTPUnauthorized:
            return self._render(
                request, "login.html.j2", http_status=401, error="wrong name or password"
            )
        except (web.HTTPTooManyRequests, web.HTTPServiceUnavailable) as refused:
            response = self._render(
                request, "login.html.j2", http_status=refused.status, error=refused.text
            )
            response.headers["Retry-After"] = refused.headers["Retry-After"]
            return response
