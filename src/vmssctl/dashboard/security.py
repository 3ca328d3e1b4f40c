"""The dashboard's security, as middleware: no route can forget it (Starlette's model).

Every request, whatever its route: the Host header must name this server (DNS rebinding); the caller is a
browser session (an HttpOnly, SameSite=Strict cookie, got once by opening the one-time login link) or a
script with the API token as a bearer; a state-changing request (any method but GET, HEAD and OPTIONS) must
come from this origin and, from a browser, carry the session's CSRF token. A GET carrying a one-time login
code exchanges it for a session and is sent back to the same page without the code.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from vmssctl.dashboard.app import Dashboard

COOKIE = "vmssctl_session"
SAFE = ("GET", "HEAD", "OPTIONS")  # every other method changes something: same origin and CSRF token


class Security:
    """ASGI middleware in front of every route; puts the session id (None for a bearer) in ``request.state.sid``."""

    def __init__(self, app: ASGIApp, dash: Dashboard) -> None:
        self.app, self.dash = app, dash

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.check(Request(scope, receive))
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def check(self, request: Request) -> Response | None:
        """None to let the request through (its session recorded in its state), else the answer that refuses it."""
        d = self.dash
        if not d.allowed_host(request):
            return PlainTextResponse("unexpected Host header", 400)
        sid = d.session(request)
        code = request.query_params.get("token")
        if sid is None and code and request.method == "GET" and d.use_login_code(code):
            sid = d.new_session()
            target = request.url.path + (f"?rg={quote(request.query_params['rg'])}"
                                         if request.query_params.get("rg") else "")
            resp = RedirectResponse(target, 303)
            resp.set_cookie(COOKIE, sid, httponly=True, samesite="strict", path="/")
            return resp
        if sid is None and not d.bearer_ok(request):
            return PlainTextResponse("not logged in: open the login link vmssctl dashboard printed (each link "
                                     "works once; GET /login with the API token mints another)", 401)
        if request.method not in SAFE:
            origin = request.headers.get("origin")
            if origin and origin not in (f"http://127.0.0.1:{d.port}", f"http://localhost:{d.port}"):
                return PlainTextResponse("cross-origin request refused", 403)
            if sid is not None and not hmac.compare_digest(request.headers.get("x-csrf-token", ""),
                                                           d.sessions[sid]):
                return PlainTextResponse("missing or wrong CSRF token", 403)
        request.state.sid = sid
        return None
