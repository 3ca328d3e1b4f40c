"""The ARM request pipeline: ordered stages each request passes (Azurite's middleware chain, Starlette's
model): request id → envelope and errors → authentication → api-version → throttling → injected latency →
route → authorization → injected faults → body → linked access → scope → handler. A stage answers, or passes the
call on to the next one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from vmssctl.emulator import authorization, validate
from vmssctl.emulator.envelope import (
    Ctx,
    bearer,
    error_response,
    json_response,
    read_body,
    throttle_headers,
    too_many,
)
from vmssctl.emulator.errors import ArmError
from vmssctl.emulator.routes import Match
from vmssctl.emulator.runtime import Emulator
from vmssctl.emulator.stats import WRITE_METHODS

log = logging.getLogger("vmssctl.emulator")

# Released Compute api-versions real clients send (ARM accepts every released one).
API_VERSIONS = frozenset({
    "2016-03-30", "2017-03-30", "2017-12-01", "2018-04-01", "2018-06-01", "2018-10-01", "2019-03-01",
    "2019-07-01", "2019-12-01", "2020-06-01", "2020-12-01", "2021-03-01", "2021-04-01", "2021-07-01",
    "2021-11-01", "2022-03-01", "2022-08-01", "2022-11-01", "2023-03-01", "2023-07-01", "2023-09-01",
    "2024-03-01", "2024-07-01", "2024-11-01", "2025-04-01", "2025-11-01", "2026-03-01", "2026-04-01",
    # the Compute Gallery's and the resource SKUs' own (az and azure-mgmt-compute send these for them)
    "2022-03-03", "2023-07-03", "2024-03-03", "2025-03-03", "2026-03-03", "2026-03-02",
})
# Microsoft.Network's released api-versions of these years (azure-mgmt-network and az send recent ones).
NETWORK_API_VERSIONS = frozenset({
    "2023-04-01", "2023-05-01", "2023-06-01", "2023-09-01", "2023-11-01", "2024-01-01", "2024-03-01",
    "2024-05-01", "2024-07-01", "2024-10-01", "2025-01-01", "2025-03-01", "2025-05-01", "2025-07-01",
    "2025-09-01", "2026-01-01", "2026-03-01",
})
# Microsoft.Resources and metadata calls az makes (subscriptions, resource groups), and Microsoft.Authorization's
# permissions.
RESOURCES_API_VERSIONS = frozenset({"2015-07-01", "2016-06-01", "2018-01-01-preview", "2022-04-01", "2019-11-01",
                                    "2020-01-01", "2021-01-01", "2021-04-01",
                                    "2022-01-01", "2022-09-01", "2022-12-01", "2023-07-01", "2024-03-01",
                                    "2024-11-01", "2025-04-01"})
ANY_API_VERSION = API_VERSIONS | RESOURCES_API_VERSIONS | NETWORK_API_VERSIONS


@dataclass
class Call:
    """A request on its way through the stages, and what they learned of it."""

    emu: Emulator
    request: Request
    method: str
    match: Match
    headers: dict = field(default_factory=dict)  # what every answer carries (the request ids)
    api_version: str = ""
    body: Any = None
    handled: bool = False  # the handler answered (not a stage before it)

    @property
    def sub(self) -> str:
        return str(self.match.params.get("sub", self.emu.world.subscription))

    @property
    def write(self) -> bool:
        return self.method in WRITE_METHODS and self.match.operation != "Operations_Get"


Next = Callable[[Call], Awaitable[Response]]
Stage = Callable[[Call, Next], Awaitable[Response]]


async def request_ids(call: Call, nxt: Next) -> Response:
    request_id = str(uuid.uuid4())
    call.headers = {"x-ms-request-id": request_id, "x-ms-correlation-request-id":
                    call.request.headers.get("x-ms-correlation-request-id", request_id)}
    response = await nxt(call)
    response.headers.update(call.headers)
    return response


async def errors(call: Call, nxt: Next) -> Response:
    """ARM's error envelope for every refusal; a bug is a 500 in ARM's shape, never a dropped connection."""
    try:
        return await nxt(call)
    except ArmError as err:
        return error_response(err)
    except (TypeError, AttributeError, KeyError, ValueError) as e:
        if call.body is None:
            log.exception("unhandled error serving %s %s", call.method, call.request.url.path)
            return error_response(ArmError(500, "InternalServerError", "The emulator hit an internal error."))
        # a body of a shape the validation did not foresee: refuse it as ARM's deserializer would
        log.warning("refused a %s %s body the emulator could not read: %r", call.method, call.request.url.path, e)
        return error_response(ArmError(400, "InvalidRequestContent", "The request content was invalid and could "
                                       f"not be deserialized: {e.__class__.__name__}."))
    except Exception:
        log.exception("unhandled error serving %s %s", call.method, call.request.url.path)
        return error_response(ArmError(500, "InternalServerError", "The emulator hit an internal error."))


async def authenticate(call: Call, nxt: Next) -> Response:
    token = bearer(call.request)
    if token is not None and call.emu.token_ok(token):
        return await nxt(call)
    missing = token is None
    return json_response({"error": {"code": "AuthenticationFailed" if missing else "InvalidAuthenticationToken",
                                    "message": "Authentication failed. The 'Authorization' header is missing."
                                    if missing else "The access token is invalid."}}, 401,
                         {"WWW-Authenticate":
                          f'Bearer authorization_uri="https://login.microsoftonline.com/{call.emu.world.tenant}", '
                          'error="invalid_token", error_description="The authentication failed"'})


async def api_version(call: Call, nxt: Next) -> Response:
    version = call.request.query_params.get("api-version")
    if not version:
        raise ArmError(400, "MissingApiVersionParameter",
                       "The api-version query parameter (?api-version=) is required for all requests.")
    subscriptions = call.match.params.get("rg") is None and call.match.operation.startswith("Subscriptions")
    if version not in ANY_API_VERSION and not subscriptions:
        raise ArmError(400, "InvalidApiVersionParameter",
                       f"The api-version '{version}' is invalid. The supported versions are "
                       f"'{', '.join(sorted(API_VERSIONS, reverse=True)[:6])}, ...'.")
    call.api_version = version
    return await nxt(call)


async def throttle(call: Call, nxt: Next) -> Response:
    """The subscription's read or write budget (429 when spent); a served request says what is left."""
    emu = call.emu
    if emu.throttle.limits.enabled:
        bucket = emu.throttle.bucket(call.sub, call.write)
        if not bucket.take():
            emu.stats.throttled += 1
            return too_many(emu, bucket.wait_seconds(), call.write, call.sub)
    response = await nxt(call)
    if call.handled:
        response.headers.update(throttle_headers(emu, call.sub))
    return response


async def latency(call: Call, nxt: Next) -> Response:
    if call.emu.faults.latency_ms:
        await asyncio.sleep(call.emu.faults.latency_ms / 1000)
    return await nxt(call)


async def routed(call: Call, nxt: Next) -> Response:
    if call.match.handler is not None:
        return await nxt(call)
    path = call.request.url.path
    if call.match.operation == "Unknown":
        raise ArmError(404, "NoRegisteredProviderFound" if "providers" in path.lower() else "NotFound",
                       f"No route for {call.method} {path}.")
    raise ArmError(405, "MethodNotAllowed", f"The HTTP method '{call.method}' is not supported here.")


async def authorize(call: Call, nxt: Next) -> Response:
    """A denied action is refused before anything happens, in ARM's words (the permissions API itself is always
    answered: it is how a caller learns what it may do)."""
    segs = [s for s in call.request.url.path.split("/") if s]
    action = authorization.action_of(call.method, segs)
    if not call.emu.authorization.allows(action) and not action.lower().startswith("microsoft.authorization/"):
        raise ArmError(403, "AuthorizationFailed", authorization.refusal(action, segs))
    return await nxt(call)


async def injected_faults(call: Call, nxt: Next) -> Response:
    """A share of requests fails before acting, as a test asked (``/_emulator/faults``)."""
    emu = call.emu
    rolled = emu.dice.roll(emu.faults)
    if rolled is None:
        return await nxt(call)
    emu.stats.injected_errors += 1
    if rolled == 429:
        emu.stats.throttled += 1
        return too_many(emu, 1, call.write, call.sub)
    code = "InternalServerError" if rolled == 500 else "ServiceUnavailable"
    return json_response({"error": {"code": code, "message": "Injected fault: the emulator failed this request "
                                    "before acting on it."}}, rolled)


async def json_body(call: Call, nxt: Next) -> Response:
    if call.method in ("PUT", "PATCH", "POST"):
        raw = await read_body(call.request)
        if raw.strip():
            validate.check_content_type(call.request.headers.get("content-type"))
            call.body = validate.parse_json(raw)
    return await nxt(call)


async def linked_access(call: Call, nxt: Next) -> Response:
    """A write that joins what its body names (a subnet, a pool) needs the join action on each: ARM's linked
    access check, refused as 403 ``LinkedAuthorizationFailed`` before anything happens."""
    if call.method in ("PUT", "PATCH") and call.body is not None:
        refused = [(a, s) for a, s in authorization.linked(call.body) if not call.emu.authorization.allows(a)]
        if refused:
            segs = [s for s in call.request.url.path.split("/") if s]
            raise ArmError(403, "LinkedAuthorizationFailed", authorization.linked_refusal(
                authorization.action_of(call.method, segs), segs, refused))
    return await nxt(call)


async def scope(call: Call, nxt: Next) -> Response:
    """The subscription exists, and the resource group is one of it."""
    params, groups = call.match.params, call.emu.world.resource_groups
    if "sub" in params:
        groups.check_subscription(params["sub"])
        if "rg" in params:
            groups.check_in_subscription(params["rg"], params["sub"])
    return await nxt(call)


async def handle(call: Call, nxt: Next) -> Response:
    handler = call.match.handler
    assert handler is not None
    url = call.request.url
    response = handler(Ctx(call.emu, call.request, call.method, call.api_version, f"{url.scheme}://{url.netloc}",
                           call.match.params, call.body))
    call.handled = True
    return response


STAGES: tuple[Stage, ...] = (request_ids, errors, authenticate, api_version, throttle, latency, routed, authorize,
                             injected_faults, json_body, linked_access, scope, handle)


def chain(stages: tuple[Stage, ...]) -> Next:
    """``stages`` as one call: each passed the rest as its next (built once, not on every request)."""
    async def last(call: Call) -> Response:
        raise AssertionError("the last stage answers")
    def then(stage: Stage, nxt: Next) -> Next:
        return lambda call: stage(call, nxt)
    nxt: Next = last
    for stage in reversed(stages):
        nxt = then(stage, nxt)
    return nxt


_CHAIN = chain(STAGES)


async def run(call: Call) -> Response:
    """Pass ``call`` through the stages in order."""
    return await _CHAIN(call)
