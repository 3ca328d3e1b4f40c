"""ARM's envelopes, shared by every handler: JSON bodies, errors, paging, long-running operations (the
``Azure-AsyncOperation``/``Location`` headers), throttling headers and refusals, and the request context."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response

from vmssctl.emulator import timing, validate
from vmssctl.emulator.errors import ArmError

if TYPE_CHECKING:
    from vmssctl.emulator.resources.operations import Operation
    from vmssctl.emulator.runtime import Emulator
    from vmssctl.emulator.world import World

JSON = "application/json; charset=utf-8"


@dataclass
class Ctx:
    """One ARM request as a handler sees it: the route's parameters and the body, already read and checked."""

    emu: Emulator
    request: Request
    method: str
    api_version: str
    base: str  # scheme://host:port
    params: dict
    body: Any = None

    @property
    def world(self) -> World:
        return self.emu.world


Handler = Callable[[Ctx], Response]


def json_response(body: object, status: int = 200, headers: dict | None = None) -> Response:
    """ARM's JSON (orjson: encoding was half of a 1,000-VM listing's cost with the standard library's)."""
    return Response(orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), status, headers=headers, media_type=JSON)


def error_response(err: ArmError, headers: dict | None = None) -> Response:
    return json_response(err.body(), err.status, {**(headers or {}), **err.headers})


def bearer(request: Request) -> str | None:
    """The bearer token of the Authorization header, if there is one."""
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def read_body(request: Request) -> bytes:
    """The request body, refused (413) past ARM's size limit without reading the rest into memory."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > validate.MAX_BODY_BYTES:
        raise validate.too_large(int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > validate.MAX_BODY_BYTES:
            raise validate.too_large(size)
        chunks.append(chunk)
    return b"".join(chunks)


def page(ctx: Ctx, items: list, render: Callable[[Any], dict],
         encoded: Callable[[Any], bytes] | None = None) -> Response:
    """One page of a list (``value`` and, when more follow, ``nextLink`` with a ``$skiptoken``). ``encoded``:
    each item's JSON as it is kept already (a listing then encodes only the envelope)."""
    q = ctx.request.query_params
    start = validate.skiptoken(q.get("$skiptoken"))
    size = ctx.emu.page_size
    window = items[start:start + size]
    link = None
    if start + size < len(items):
        keep = {k: v for k, v in q.items() if k not in ("$skiptoken", "api-version")}
        query = urlencode({"api-version": ctx.api_version, **keep, "$skiptoken": start + size}, quote_via=quote)
        link = f"{ctx.base}{ctx.request.url.path}?{query}"
    if encoded is None:
        body: dict = {"value": [render(x) for x in window]}
        if link is not None:
            body["nextLink"] = link
        return json_response(body)
    tail = b'],"nextLink":' + orjson.dumps(link) + b"}" if link is not None else b"]}"
    data = b"".join((b'{"value":[', b",".join([encoded(x) for x in window]), tail))  # (a page is copied twice)
    return Response(data, 200, media_type=JSON)


# ------------------------------------------------------------------------ long-running operations
def retry_after(ctx: Ctx, remaining_sim: float) -> dict[str, str]:
    """``Retry-After`` for an operation in flight, when the emulator is asked to send one (``--retry-after``).

    Real Compute sends none on these operations (see tests/replay/): clients then poll at their own interval
    (the Python SDK's ``polling_interval``, 30 s unless configured)."""
    if not ctx.emu.retry_after:
        return {}
    scale = ctx.world.clock.scale
    if not scale:
        return {"Retry-After": "1"}
    return {"Retry-After": str(max(1, math.ceil(min(remaining_sim, timing.LRO_POLL) / scale)))}


def _op_url(ctx: Ctx, op: Operation, monitor: bool = False) -> str:
    url = (f"{ctx.base}/subscriptions/{ctx.params.get('sub') or ctx.world.subscription}/providers/"
           "Microsoft.Compute/locations/"
           f"{op.location}/operations/{op.id}?api-version={ctx.api_version}")
    return url + ("&monitor=true" if monitor else "")


def lro_headers(ctx: Ctx, op: Operation, location: bool) -> dict:
    headers = {"Azure-AsyncOperation": _op_url(ctx, op), **retry_after(ctx, ctx.world.operations.remaining(op))}
    if location:
        headers["Location"] = _op_url(ctx, op, monitor=True)
    return headers


def accepted(ctx: Ctx, op: Operation) -> Response:
    """202 Accepted for an operation that goes on: where to poll it."""
    return Response(status_code=202, headers=lro_headers(ctx, op, location=True))


# ------------------------------------------------------------------------------- throttling
def throttle_headers(emu: Emulator, sub: str) -> dict:
    reads = emu.throttle.bucket(sub, False).remaining
    writes = emu.throttle.bucket(sub, True).remaining
    return {"x-ms-ratelimit-remaining-subscription-reads": str(reads),
            "x-ms-ratelimit-remaining-subscription-writes": str(writes),
            "x-ms-ratelimit-remaining-resource":
                f"Microsoft.Compute/HighCostGet3Min;{reads},Microsoft.Compute/HighCostGet30Min;{reads * 10}"}


def too_many(emu: Emulator, wait: int, write: bool, sub: str) -> Response:
    """ARM's 429, as the subscription's read or write budget says it."""
    bucket = "SubscriptionWrites" if write else "SubscriptionReads"
    body = {"error": {"code": "OperationNotAllowed",
                      "message": "The server rejected the request because too many requests have been received "
                                 "for this subscription.",
                      "details": [{"code": "TooManyRequests", "target": bucket,
                                   "message": f"{{\"operationGroup\":\"{bucket}\",\"startTime\":\"\","
                                              f"\"endTime\":\"\",\"allowedRequestCount\":"
                                              f"{int(emu.throttle.limits.read_capacity)},"
                                              "\"measuredRequestCount\":0}"}]}}
    return json_response(body, 429, {"Retry-After": str(wait), **throttle_headers(emu, sub)})
