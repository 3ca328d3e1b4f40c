"""The emulator's HTTP application: ARM's endpoint (every path goes through the route table and the request
pipeline), the cloud metadata ``az cloud register`` reads, the managed-identity token endpoint, and the admin
API (``control``). State and behaviour live in the world's resources; envelopes in ``envelope``.
"""

from __future__ import annotations

import hmac
import re
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from vmssctl.emulator import pipeline, routes
from vmssctl.emulator.envelope import json_response
from vmssctl.emulator.runtime import Emulator
from vmssctl.emulator.stats import WRITE_METHODS

__all__ = ["Emulator", "build_app"]


async def arm_endpoint(request: Request) -> Response:
    emu: Emulator = request.app.state.emu
    method = request.method
    match = routes.route(method, [s for s in request.url.path.split("/") if s])
    status = 500
    try:
        response = await pipeline.run(pipeline.Call(emu, request, method, match))
        status = response.status_code
        if method in WRITE_METHODS:  # (refused or not: what it may have changed is looked at by the next save)
            emu.world.touch(_group_of(request.url.path))
        if method in WRITE_METHODS and status < 400:
            await emu.written()  # what ARM acknowledged is on disk before the client hears of it
        return response
    finally:
        emu.stats.record(method, match.operation, request.url.path, status, emu.world.now())


def _group_of(path: str) -> str | None:
    """The resource group a request's path is in (None: wider, a subscription or the whole world)."""
    segs = path.split("/")
    low = [x.lower() for x in segs]
    return segs[low.index("resourcegroups") + 1] if "resourcegroups" in low[:-1] else None


async def metadata_endpoints(request: Request) -> Response:
    """What ``az cloud register --endpoint-resource-manager`` reads."""
    base = f"{request.url.scheme}://{request.url.netloc}"
    emu: Emulator = request.app.state.emu
    return json_response({
        "name": "vmssctl-emulator", "resourceManager": base + "/", "portal": base + "/",
        "galleryEndpoint": base + "/", "graph": base + "/", "graphAudience": base + "/",
        "microsoftGraphResourceId": base + "/", "batch": base + "/", "sqlManagement": base + "/",
        "media": base + "/", "gallery": base + "/",
        "authentication": {"loginEndpoint": f"{base}/", "audiences": [f"{base}/", "https://management.azure.com/"],
                           "tenant": emu.world.tenant, "identityProvider": "AAD"},
        "suffixes": {"storage": "core.windows.net", "keyVaultDns": "vault.azure.net",
                     "acrLoginServer": "azurecr.io", "sqlServerHostname": "database.windows.net"},
    })


async def identity_token(request: Request) -> Response:
    """App Service style managed-identity endpoint (``IDENTITY_ENDPOINT``) for ``az login --identity``."""
    emu: Emulator = request.app.state.emu
    header = request.headers.get("x-identity-header", "")
    if not hmac.compare_digest(header, emu.token):
        return json_response({"error": "invalid_request",
                              "error_description": "X-IDENTITY-HEADER is missing or wrong."}, 401)
    resource = request.query_params.get("resource") or request.query_params.get("scope", "").removesuffix(
        "/.default")
    token, exp = emu.mint_jwt(resource or "https://management.azure.com/")
    return json_response({"access_token": token, "expires_on": str(exp), "resource": resource,
                          "token_type": "Bearer", "client_id": str(uuid.UUID(int=2))})


ARM_METHODS = frozenset({"GET", "PUT", "PATCH", "POST", "DELETE", "HEAD"})
ARM_PREFIXES = ("/subscriptions/", "/providers/")  # (no metadata or admin route starts so)


class _Front:
    """The ASGI entry. ``az cloud register --endpoint-resource-manager https://host/`` yields ``//metadata/...``:
    ARM shrugs, and so does this. ARM's own paths go to the ARM endpoint at once: Starlette's router would try
    every metadata and admin route on each of them first."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if "//" in scope["path"]:
                scope = dict(scope, path=re.sub("/{2,}", "/", scope["path"]))
            if scope["method"] in ARM_METHODS and scope["path"].startswith(ARM_PREFIXES):
                scope["app"] = self.app  # (what Starlette gives its endpoints' requests: request.app.state)
                response = await arm_endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(emu: Emulator) -> _Front:
    from vmssctl.emulator import control

    app = Starlette(routes=[
        Route("/metadata/endpoints", metadata_endpoints, methods=["GET"]),
        Route("/metadata/identity/oauth2/token", identity_token, methods=["GET"]),
        *control.routes(),
        Route("/{path:path}", arm_endpoint, methods=sorted(ARM_METHODS)),
    ])
    app.state.emu = emu
    return _Front(app)
