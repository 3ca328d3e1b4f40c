"""The HTTP face of the emulator: ARM routes, envelopes, errors, LRO headers, paging.

ARM paths are case-insensitive (clients send both ``virtualmachines/0/poweroff`` and
``virtualMachines/0/powerOff``), so routing matches lower-cased segments rather than
using Starlette's case-sensitive router. The admin API lives under ``/_emulator/``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from vmssctl import inputs
from vmssctl.emulator import shapes, timing, validate
from vmssctl.emulator.errors import ArmError, invalid
from vmssctl.emulator.faults import Faults, RequestDice, Throttle, ThrottleLimits
from vmssctl.emulator.stats import WRITE_METHODS, RequestStats
from vmssctl.emulator.world import World

log = logging.getLogger("vmssctl.emulator")

# Released Compute api-versions real clients send (ARM accepts every released one).
API_VERSIONS = frozenset({
    "2016-03-30", "2017-03-30", "2017-12-01", "2018-04-01", "2018-06-01", "2018-10-01", "2019-03-01",
    "2019-07-01", "2019-12-01", "2020-06-01", "2020-12-01", "2021-03-01", "2021-04-01", "2021-07-01",
    "2021-11-01", "2022-03-01", "2022-08-01", "2022-11-01", "2023-03-01", "2023-07-01", "2023-09-01",
    "2024-03-01", "2024-07-01", "2024-11-01", "2025-04-01", "2025-11-01", "2026-03-01", "2026-04-01",
})
# Microsoft.Resources and metadata calls az makes (subscriptions, resource groups).
RESOURCES_API_VERSIONS = frozenset({"2016-06-01", "2019-11-01", "2020-01-01", "2021-01-01", "2021-04-01",
                                    "2022-01-01", "2022-09-01", "2022-12-01", "2023-07-01", "2024-03-01",
                                    "2024-11-01", "2025-04-01"})
FILTER_RE = re.compile(r"^\s*properties/latestModelApplied\s+eq\s+(true|false)\s*$", re.I)
VM_SET_FILTER_RE = re.compile(r"^\s*'?virtualMachineScaleSet/id'?\s+eq\s+'([^']+)'\s*$", re.I)
FLEX_VM_ACTIONS = ("restart", "start", "poweroff", "deallocate", "reimage", "redeploy")  # a VM's own actions
JSON = "application/json; charset=utf-8"


@dataclass
class Emulator:
    """Runtime wiring: the world plus what only the HTTP layer needs."""

    world: World
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    throttle: Throttle = field(default_factory=lambda: Throttle(ThrottleLimits()))
    stats: RequestStats = field(default_factory=RequestStats)
    page_size: int = 100
    seed: int = 0
    retry_after: bool = False  # Retry-After on LROs, scaled to the clock; off by default, as real Compute sends none
    dice: RequestDice = field(init=False)
    persistence: dict = field(default_factory=lambda: {"ok": True, "failures": 0})
    on_write: Callable[[], object] | None = None  # persist an acknowledged change before answering

    def __post_init__(self) -> None:
        self.dice = RequestDice(self.seed)
        self._jwt_key = hashlib.sha256(("jwt:" + self.token).encode()).digest()

    @property
    def faults(self) -> Faults:
        return self.world.faults

    # A managed-identity token for az: a JWT it can decode (it never verifies), signed so
    # that only tokens this emulator issued are accepted back.
    def mint_jwt(self, resource: str) -> tuple[str, int]:
        now = int(time.time())
        exp = now + 3600
        claims = {"aud": resource, "iss": f"https://sts.windows.net/{self.world.tenant}/", "iat": now,
                  "nbf": now, "exp": exp, "tid": self.world.tenant, "oid": str(uuid.UUID(int=1)),
                  "sub": str(uuid.UUID(int=1)), "appid": str(uuid.UUID(int=2)), "idtyp": "app",
                  "xms_mirid": "/vmssctl-emulator/identity"}
        def enc(obj: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
        head = enc({"alg": "HS256", "typ": "JWT"}) + "." + enc(claims)
        sig = base64.urlsafe_b64encode(hmac.new(self._jwt_key, head.encode(), "sha256").digest()).rstrip(b"=")
        return head + "." + sig.decode(), exp

    def token_ok(self, token: str) -> bool:
        if hmac.compare_digest(token, self.token):
            return True
        head, _, sig = token.rpartition(".")
        if not head:
            return False
        want = base64.urlsafe_b64encode(hmac.new(self._jwt_key, head.encode(), "sha256").digest()).rstrip(b"=")
        if not hmac.compare_digest(want.decode(), sig):
            return False
        try:
            payload = head.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError:
            return False
        return claims.get("exp", 0) > time.time()


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


def _json(body: object, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status, headers=headers, media_type=JSON)


def _error(err: ArmError, headers: dict | None = None) -> Response:
    return _json(err.body(), err.status, {**(headers or {}), **err.headers})


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


# ----------------------------------------------------------------------------- routing
@dataclass
class Ctx:
    emu: Emulator
    request: Request
    method: str
    api_version: str
    base: str  # scheme://host:port
    params: dict
    body: object = None

    @property
    def world(self) -> World:
        return self.emu.world


Handler = Callable[[Ctx], Response]


def _route(method: str, segs: list[str]) -> tuple[str, Handler | None, dict]:
    """(operation id, handler, path params) for a lower-cased path split on '/'."""
    low = [s.lower() for s in segs]
    n = len(low)
    if n == 1 and low[0] == "subscriptions":
        return "Subscriptions_List", _list_subscriptions if method == "GET" else None, {}
    if n < 2 or low[0] != "subscriptions":
        return "Unknown", None, {}
    p: dict = {"sub": segs[1]}
    if n == 2:
        return "Subscriptions_Get", _get_subscription if method == "GET" else None, p
    if n == 3 and low[2] == "resourcegroups":
        return "ResourceGroups_List", _list_groups if method == "GET" else None, p
    if low[2:5] == ["providers", "microsoft.compute", "virtualmachinescalesets"] and n == 5:
        return "VirtualMachineScaleSets_ListAll", _list_all_sets if method == "GET" else None, p
    if low[2:5] == ["providers", "microsoft.compute", "locations"] and n == 15 and \
            [low[6], low[8], low[9], low[10], low[12], low[14]] == ["publishers", "artifacttypes", "vmimage", "offers",
                                                                    "skus", "versions"]:
        p.update(location=segs[5], publisher=segs[7], offer=segs[11], sku=segs[13])
        return "VirtualMachineImages_List", _list_image_versions if method == "GET" else None, p
    if low[2:5] == ["providers", "microsoft.compute", "locations"] and n == 8 and low[6] == "operations":
        p.update(location=segs[5], op_id=segs[7])
        return "Operations_Get", _get_operation if method == "GET" else None, p
    if low[2] != "resourcegroups" or n < 4:
        return "Unknown", None, p
    p["rg"] = segs[3]
    if n == 4:
        handlers = {"GET": _get_group, "HEAD": _head_group, "PUT": _put_group, "DELETE": _delete_group}
        return f"ResourceGroups_{method.title()}", handlers.get(method), p
    if low[4:7] == ["providers", "microsoft.compute", "virtualmachines"]:
        return _route_vm(method, segs, low, p)
    if low[4:7] != ["providers", "microsoft.compute", "virtualmachinescalesets"]:
        return "Unknown", None, p
    if n == 7:
        return "VirtualMachineScaleSets_List", _list_sets if method == "GET" else None, p
    p["name"] = segs[7]
    if n == 8:
        handlers = {"GET": _get_set, "PUT": _put_set, "PATCH": _patch_set, "DELETE": _delete_set}
        names = {"GET": "Get", "PUT": "CreateOrUpdate", "PATCH": "Update", "DELETE": "Delete"}
        return f"VirtualMachineScaleSets_{names.get(method, method)}", handlers.get(method), p
    rest = low[8:]
    if rest == ["instanceview"]:
        return "VirtualMachineScaleSets_GetInstanceView", _set_instance_view if method == "GET" else None, p
    if rest == ["osrollingupgrade"]:
        return "VirtualMachineScaleSetRollingUpgrades_StartOSUpgrade", (
            _start_rolling if method == "POST" else None), p
    if rest == ["rollingupgrades", "latest"]:
        return "VirtualMachineScaleSetRollingUpgrades_GetLatest", _latest_rolling if method == "GET" else None, p
    if rest == ["rollingupgrades", "cancel"]:
        return "VirtualMachineScaleSetRollingUpgrades_Cancel", _cancel_rolling if method == "POST" else None, p
    if len(rest) == 1 and rest[0] in World.ACTIONS:
        p["action"] = rest[0]
        opname = "UpdateInstances" if rest[0] == "manualupgrade" else (
            "DeleteInstances" if rest[0] == "delete" else rest[0].title())
        return f"VirtualMachineScaleSets_{opname}", _set_action if method == "POST" else None, p
    if rest[0] != "virtualmachines":
        return "Unknown", None, p
    if len(rest) == 1:
        return "VirtualMachineScaleSetVMs_List", _list_vms if method == "GET" else None, p
    p["iid"] = segs[9]
    if len(rest) == 2:
        handlers = {"GET": _get_vm, "PUT": _put_vm, "DELETE": _delete_vm}
        names = {"GET": "Get", "PUT": "Update", "DELETE": "Delete"}
        return f"VirtualMachineScaleSetVMs_{names.get(method, method)}", handlers.get(method), p
    if len(rest) == 3 and rest[2] == "instanceview":
        return "VirtualMachineScaleSetVMs_GetInstanceView", _vm_instance_view if method == "GET" else None, p
    if len(rest) == 3 and rest[2] in World.ACTIONS and rest[2] not in ("manualupgrade", "delete"):
        p["action"] = rest[2]
        return f"VirtualMachineScaleSetVMs_{rest[2].title()}", _vm_action if method == "POST" else None, p
    return "Unknown", None, p


def _route_vm(method: str, segs: list[str], low: list[str], p: dict) -> tuple[str, Handler | None, dict]:
    """``…/providers/Microsoft.Compute/virtualMachines[/{name}[/instanceView|/{action}]]``: a Flexible set's VMs."""
    n = len(low)
    if n == 7:
        return "VirtualMachines_List", _list_flex_vms if method == "GET" else None, p
    p["vm"] = segs[7]
    if n == 8:
        handlers = {"GET": _get_flex_vm, "DELETE": _delete_flex_vm}
        return f"VirtualMachines_{method.title()}", handlers.get(method), p
    if n == 9 and low[8] == "instanceview":
        return "VirtualMachines_InstanceView", _flex_vm_instance_view if method == "GET" else None, p
    if n == 9 and low[8] in FLEX_VM_ACTIONS:
        p["action"] = low[8]
        return f"VirtualMachines_{segs[8][:1].upper()}{segs[8][1:]}", _flex_vm_action if method == "POST" else None, p
    return "Unknown", None, p


# ------------------------------------------------------------------------ LRO envelopes
def _retry_after(ctx: Ctx, remaining_sim: float) -> dict[str, str]:
    """``Retry-After`` for an operation in flight, when the emulator is asked to send one (``--retry-after``).

    Real Compute sends none on these operations (see tests/replay/): clients then poll at their own interval
    (the Python SDK's ``polling_interval``, 30 s unless configured)."""
    if not ctx.emu.retry_after:
        return {}
    scale = ctx.world.clock.scale
    if not scale:
        return {"Retry-After": "1"}
    return {"Retry-After": str(max(1, math.ceil(min(remaining_sim, timing.LRO_POLL) / scale)))}


def _op_url(ctx: Ctx, op, monitor: bool = False) -> str:
    url = (f"{ctx.base}/subscriptions/{ctx.params.get('sub') or ctx.world.subscription}/providers/"
           "Microsoft.Compute/locations/"
           f"{op.location}/operations/{op.id}?api-version={ctx.api_version}")
    return url + ("&monitor=true" if monitor else "")


def _lro_headers(ctx: Ctx, op, location: bool) -> dict:
    headers = {"Azure-AsyncOperation": _op_url(ctx, op), **_retry_after(ctx, ctx.world.op_remaining(op))}
    if location:
        headers["Location"] = _op_url(ctx, op, monitor=True)
    return headers


def _accepted(ctx: Ctx, op) -> Response:
    return Response(status_code=202, headers=_lro_headers(ctx, op, location=True))


def _get_operation(ctx: Ctx) -> Response:
    op = ctx.world.op_status(ctx.params["op_id"])
    running = op.status == "InProgress"
    headers = _retry_after(ctx, ctx.world.op_remaining(op)) if running else {}
    if ctx.request.query_params.get("monitor", "").lower() == "true":
        if running:
            return Response(status_code=202, headers={**headers, "Location": str(ctx.request.url)})
        if op.status == "Failed":
            return _json({"error": op.error}, 200)
        return Response(status_code=200)
    return _json(shapes.operation(op), 200, headers)


# --------------------------------------------------------------- platform image catalogue
def _list_image_versions(ctx: Ctx) -> Response:
    """The versions of a platform image SKU: a bare JSON array, as Compute returns it."""
    p = ctx.params
    versions = ctx.world.catalog.versions(p["publisher"], p["offer"], p["sku"])
    q = ctx.request.query_params
    if "desc" in q.get("$orderby", "").lower():
        versions.reverse()
    if q.get("$top", "").isascii() and q.get("$top", "").isdigit():
        versions = versions[: int(q["$top"])]
    base = (f"/Subscriptions/{ctx.world.subscription}/Providers/Microsoft.Compute/Locations/{p['location']}/"
            f"Publishers/{p['publisher']}/ArtifactTypes/VMImage/Offers/{p['offer']}/Skus/{p['sku']}/Versions")
    return _json([{"name": v, "location": p["location"], "id": f"{base}/{v}"} for v in versions])


# --------------------------------------------------------------- subscriptions, groups
def _list_subscriptions(ctx: Ctx) -> Response:
    subs = ctx.world.subscriptions
    return _json({"value": [shapes.subscription(ctx.world, x) for x in subs],
                  "count": {"type": "Total", "value": len(subs)}})


def _get_subscription(ctx: Ctx) -> Response:
    ctx.world.check_subscription(ctx.params["sub"])
    return _json(shapes.subscription(ctx.world, ctx.params["sub"]))


def _list_groups(ctx: Ctx) -> Response:
    sub = ctx.params["sub"]
    return _json({"value": [shapes.group(sub, g) for g in ctx.world.groups.values()
                            if ctx.world.group_sub(g).lower() == sub.lower()]})


def _get_group(ctx: Ctx) -> Response:
    return _json(shapes.group(ctx.params["sub"], ctx.world.group(ctx.params["rg"])))


def _head_group(ctx: Ctx) -> Response:
    return Response(status_code=204 if ctx.params["rg"].lower() in ctx.world.groups else 404)


def _put_group(ctx: Ctx) -> Response:
    body = ctx.body if isinstance(ctx.body, dict) else {}
    if not body.get("location"):
        raise invalid("Required parameter 'location' is missing (null).", "location")
    grp, created = ctx.world.put_group(ctx.params["rg"], body["location"], body.get("tags"), ctx.params["sub"])
    return _json(shapes.group(ctx.params["sub"], grp), 201 if created else 200)


def _delete_group(ctx: Ctx) -> Response:
    op = ctx.world.delete_group(ctx.params["rg"])
    return _accepted(ctx, op)


# -------------------------------------------------------------------------- scale sets
def _page(ctx: Ctx, items: list, render: Callable[[object], dict]) -> Response:
    q = ctx.request.query_params
    start = validate.skiptoken(q.get("$skiptoken"))
    size = ctx.emu.page_size
    body: dict = {"value": [render(x) for x in items[start:start + size]]}
    if start + size < len(items):
        keep = {k: v for k, v in q.items() if k not in ("$skiptoken", "api-version")}
        query = urlencode({"api-version": ctx.api_version, **keep, "$skiptoken": start + size}, quote_via=quote)
        body["nextLink"] = f"{ctx.base}{ctx.request.url.path}?{query}"
    return _json(body)


def _list_all_sets(ctx: Ctx) -> Response:
    return _page(ctx, ctx.world.list_sets(subscription=ctx.params["sub"]), lambda s: shapes.scale_set(ctx.world, s))


def _list_sets(ctx: Ctx) -> Response:
    return _page(ctx, ctx.world.list_sets(ctx.params["rg"]), lambda s: shapes.scale_set(ctx.world, s))


def _set_response(ctx: Ctx, ss, status: int = 200, headers: dict | None = None) -> Response:
    return _json(shapes.scale_set(ctx.world, ss), status, {"ETag": f'"{ss.etag}"', **(headers or {})})


def _get_set(ctx: Ctx) -> Response:
    ss = ctx.world.get_set(ctx.params["rg"], ctx.params["name"])
    ctx.world.advance()
    return _set_response(ctx, ss)


def _put_set(ctx: Ctx) -> Response:
    h = ctx.request.headers
    ss, op, created = ctx.world.put_set(ctx.params["rg"], ctx.params["name"], ctx.body,
                                        h.get("if-match"), h.get("if-none-match"))
    return _set_response(ctx, ss, 201 if created else 200, _lro_headers(ctx, op, location=False))


def _patch_set(ctx: Ctx) -> Response:
    ss, op = ctx.world.patch_set(ctx.params["rg"], ctx.params["name"], ctx.body,
                                 ctx.request.headers.get("if-match"))
    return _set_response(ctx, ss, 200, _lro_headers(ctx, op, location=False))


def _delete_set(ctx: Ctx) -> Response:
    world = ctx.world
    world.group(ctx.params["rg"])
    if (ctx.params["rg"].lower(), ctx.params["name"].lower()) not in world.sets:
        return Response(status_code=204)
    return _accepted(ctx, world.delete_set(ctx.params["rg"], ctx.params["name"]))


def _set_instance_view(ctx: Ctx) -> Response:
    ss = ctx.world.get_set(ctx.params["rg"], ctx.params["name"])
    ctx.world.advance()
    return _json(shapes.set_instance_view(ctx.world, ss))


def _instance_ids(ctx: Ctx, required: bool) -> list[str] | None:
    body = ctx.body
    if body in (None, b"", {}) and not required:
        return None
    ids = body.get("instanceIds") if isinstance(body, dict) else None
    if ids is None and not required:
        return None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str | int) for i in ids):
        raise invalid("The parameter 'instanceIds' must be a non-empty list of instance ids.", "instanceIds")
    return None if ids == ["*"] else [str(i) for i in ids]


def _set_action(ctx: Ctx) -> Response:
    action = ctx.params["action"]
    ids = _instance_ids(ctx, required=action in ("manualupgrade", "delete"))
    op = ctx.world.act(ctx.params["rg"], ctx.params["name"], action, ids)
    return _accepted(ctx, op)


def _start_rolling(ctx: Ctx) -> Response:
    return _accepted(ctx, ctx.world.start_rolling(ctx.params["rg"], ctx.params["name"]))


def _cancel_rolling(ctx: Ctx) -> Response:
    return _accepted(ctx, ctx.world.cancel_rolling(ctx.params["rg"], ctx.params["name"]))


def _latest_rolling(ctx: Ctx) -> Response:
    ss, ru = ctx.world.latest_rolling(ctx.params["rg"], ctx.params["name"])
    return _json(shapes.rolling_status(ctx.world, ss, ru))


# ---------------------------------------------------------------------------- instances
def _list_vms(ctx: Ctx) -> Response:
    world = ctx.world
    ss = world.get_set(ctx.params["rg"], ctx.params["name"])
    world.advance()
    q = ctx.request.query_params
    items = sorted(ss.instances.values(), key=lambda i: i.instance_id)
    if "$filter" in q:
        m = FILTER_RE.match(q["$filter"])
        if not m:
            raise invalid(f"The $filter '{q['$filter']}' is not supported: use "
                          "'properties/latestModelApplied eq true|false'.", "$filter")
        want = m.group(1).lower() == "true"
        digest = ss.profile_digest
        items = [i for i in items if (i.profile == digest) == want]
    expand = q.get("$expand", "").lower()
    if expand and expand != "instanceview":
        raise invalid(f"The $expand '{q['$expand']}' is not supported: use 'instanceView'.", "$expand")
    select = {s.strip().lower() for s in q["$select"].split(",")} if q.get("$select") else None

    def render(inst) -> dict:
        body = shapes.instance(world, ss, inst, bool(expand) or (select is not None and "instanceview" in select))
        if select is not None:
            body["properties"] = {k: v for k, v in body["properties"].items() if k.lower() in select}
        return body
    return _page(ctx, items, render)


def _get_vm(ctx: Ctx) -> Response:
    ss, inst = ctx.world.get_instance(ctx.params["rg"], ctx.params["name"], ctx.params["iid"])
    expand = ctx.request.query_params.get("$expand", "").lower() == "instanceview"
    return _json(shapes.instance(ctx.world, ss, inst, expand), headers={"ETag": f'"{inst.etag}"'})


def _put_vm(ctx: Ctx) -> Response:
    h = ctx.request.headers
    ss, inst, op = ctx.world.update_instance(ctx.params["rg"], ctx.params["name"], ctx.params["iid"], ctx.body,
                                             h.get("if-match"), h.get("if-none-match"))
    return _json(shapes.instance(ctx.world, ss, inst, False), 200, _lro_headers(ctx, op, location=False))


def _delete_vm(ctx: Ctx) -> Response:
    world = ctx.world
    ss = world.get_set(ctx.params["rg"], ctx.params["name"])
    try:
        inst = ss.instances.get(int(ctx.params["iid"]))
    except ValueError:
        inst = None
    if inst is None or inst.op == "delete":
        return Response(status_code=204)
    return _accepted(ctx, world.act(ctx.params["rg"], ctx.params["name"], "delete", [ctx.params["iid"]]))


def _vm_instance_view(ctx: Ctx) -> Response:
    ss, inst = ctx.world.get_instance(ctx.params["rg"], ctx.params["name"], ctx.params["iid"])
    return _json(shapes.instance_view(ss, inst))


def _vm_action(ctx: Ctx) -> Response:
    ctx.world.get_instance(ctx.params["rg"], ctx.params["name"], ctx.params["iid"])
    return _accepted(ctx, ctx.world.act(ctx.params["rg"], ctx.params["name"], ctx.params["action"],
                                        [ctx.params["iid"]]))


# ----------------------------------------------------------------- a Flexible set's virtual machines
def _list_flex_vms(ctx: Ctx) -> Response:
    """``virtualMachines`` of a resource group; ``$filter='virtualMachineScaleSet/id' eq '{id}'`` keeps one set's,
    and ``$expand=instanceView`` is allowed only with that filter, as Compute says."""
    q = ctx.request.query_params
    set_id = None
    if "$filter" in q:
        m = VM_SET_FILTER_RE.match(q["$filter"])
        if not m:
            raise invalid(f"The $filter '{inputs.shown(q['$filter'])}' is not supported: use "
                          "\"'virtualMachineScaleSet/id' eq '{id}'\".", "$filter")
        set_id = m.group(1)
    expand = q.get("$expand", "")
    if expand and (expand.lower() != "instanceview" or set_id is None):
        raise invalid("The $expand 'instanceView' is supported only together with the filter "
                      "'virtualMachineScaleSet/id' eq '{id}'.", "$expand")
    vms = ctx.world.flexible_vms(ctx.params["rg"], set_id)
    return _page(ctx, vms, lambda x: shapes.vm(ctx.world, x[0], x[1], bool(expand)))


def _get_flex_vm(ctx: Ctx) -> Response:
    ss, inst = ctx.world.find_vm(ctx.params["rg"], ctx.params["vm"])
    expand = ctx.request.query_params.get("$expand", "").lower() == "instanceview"
    return _json(shapes.vm(ctx.world, ss, inst, expand), headers={"ETag": f'"{inst.etag}"'})


def _flex_vm_instance_view(ctx: Ctx) -> Response:
    ss, inst = ctx.world.find_vm(ctx.params["rg"], ctx.params["vm"])
    return _json(shapes.instance_view(ss, inst))


def _flex_vm_action(ctx: Ctx) -> Response:
    ss, inst = ctx.world.find_vm(ctx.params["rg"], ctx.params["vm"])
    return _accepted(ctx, ctx.world.act(ss.rg, ss.name, ctx.params["action"], [inst.name]))


def _delete_flex_vm(ctx: Ctx) -> Response:
    try:
        ss, inst = ctx.world.find_vm(ctx.params["rg"], ctx.params["vm"])
    except ArmError:
        return Response(status_code=204)
    if inst.op == "delete":
        return Response(status_code=204)
    return _accepted(ctx, ctx.world.act(ss.rg, ss.name, "delete", [inst.name]))


# ------------------------------------------------------------------------ the ARM entry
def _throttle_headers(emu: Emulator, sub: str) -> dict:
    reads = emu.throttle.bucket(sub, False).remaining
    writes = emu.throttle.bucket(sub, True).remaining
    return {"x-ms-ratelimit-remaining-subscription-reads": str(reads),
            "x-ms-ratelimit-remaining-subscription-writes": str(writes),
            "x-ms-ratelimit-remaining-resource":
                f"Microsoft.Compute/HighCostGet3Min;{reads},Microsoft.Compute/HighCostGet30Min;{reads * 10}"}


def _too_many(emu: Emulator, wait: int, write: bool, sub: str) -> Response:
    bucket = "SubscriptionWrites" if write else "SubscriptionReads"
    body = {"error": {"code": "OperationNotAllowed",
                      "message": "The server rejected the request because too many requests have been received "
                                 "for this subscription.",
                      "details": [{"code": "TooManyRequests", "target": bucket,
                                   "message": f"{{\"operationGroup\":\"{bucket}\",\"startTime\":\"\","
                                              f"\"endTime\":\"\",\"allowedRequestCount\":"
                                              f"{int(emu.throttle.limits.read_capacity)},"
                                              "\"measuredRequestCount\":0}"}]}}
    return _json(body, 429, {"Retry-After": str(wait), **_throttle_headers(emu, sub)})


async def arm_endpoint(request: Request) -> Response:
    emu: Emulator = request.app.state.emu
    method = request.method
    segs = [s for s in request.url.path.split("/") if s]
    operation, handler, params = _route(method, segs)
    status = 500
    try:
        response = await _serve_arm(request, emu, method, operation, handler, params)
        status = response.status_code
        if emu.on_write is not None and method in WRITE_METHODS and status < 400:
            emu.on_write()  # what ARM acknowledged is on disk before the client hears of it
        return response
    finally:
        emu.stats.record(method, operation, request.url.path, status, emu.world.now())


async def _serve_arm(request: Request, emu: Emulator, method: str, operation: str,
                     handler: Handler | None, params: dict) -> Response:
    request_id = str(uuid.uuid4())
    base_headers = {"x-ms-request-id": request_id,
                    "x-ms-correlation-request-id": request.headers.get("x-ms-correlation-request-id", request_id)}
    token = _bearer(request)
    if token is None or not emu.token_ok(token):
        missing = token is None
        return _json({"error": {"code": "AuthenticationFailed" if missing else "InvalidAuthenticationToken",
                                "message": "Authentication failed. The 'Authorization' header is missing."
                                if missing else "The access token is invalid."}}, 401,
                     {**base_headers, "WWW-Authenticate":
                      f'Bearer authorization_uri="https://login.microsoftonline.com/{emu.world.tenant}", '
                      'error="invalid_token", error_description="The authentication failed"'})
    api_version = request.query_params.get("api-version")
    if not api_version:
        return _error(ArmError(400, "MissingApiVersionParameter",
                               "The api-version query parameter (?api-version=) is required for all requests."),
                      base_headers)
    known = API_VERSIONS | RESOURCES_API_VERSIONS
    if api_version not in known and not (params.get("rg") is None and operation.startswith("Subscriptions")):
        return _error(ArmError(400, "InvalidApiVersionParameter",
                               f"The api-version '{api_version}' is invalid. The supported versions are "
                               f"'{', '.join(sorted(API_VERSIONS, reverse=True)[:6])}, ...'."), base_headers)
    sub = params.get("sub", emu.world.subscription)
    write = method in WRITE_METHODS and operation != "Operations_Get"
    if emu.throttle.limits.enabled:
        bucket = emu.throttle.bucket(sub, write)
        if not bucket.take():
            emu.stats.throttled += 1
            return _too_many(emu, bucket.wait_seconds(), write, sub)
    if emu.faults.latency_ms:
        await asyncio.sleep(emu.faults.latency_ms / 1000)
    if handler is None:
        if operation == "Unknown":
            err = ArmError(404, "NoRegisteredProviderFound" if "providers" in request.url.path.lower()
                           else "NotFound", f"No route for {method} {request.url.path}.")
        else:
            err = ArmError(405, "MethodNotAllowed", f"The HTTP method '{method}' is not supported here.")
        return _error(err, base_headers)
    rolled = emu.dice.roll(emu.faults)
    if rolled is not None:
        emu.stats.injected_errors += 1
        if rolled == 429:
            emu.stats.throttled += 1
            return _too_many(emu, 1, write, sub)
        code = "InternalServerError" if rolled == 500 else "ServiceUnavailable"
        return _json({"error": {"code": code, "message": "Injected fault: the emulator failed this request "
                                "before acting on it."}}, rolled, base_headers)
    body: object = None
    try:
        if method in ("PUT", "PATCH", "POST"):
            raw = await read_body(request)
            if raw.strip():
                validate.check_content_type(request.headers.get("content-type"))
                body = validate.parse_json(raw)
    except ArmError as err:
        return _error(err, base_headers)
    ctx = Ctx(emu, request, method, api_version, f"{request.url.scheme}://{request.url.netloc}", params, body)
    try:
        if "sub" in params:
            emu.world.check_subscription(params["sub"])
            if "rg" in params:
                emu.world.check_group_subscription(params["rg"], params["sub"])
        response = handler(ctx)
    except ArmError as err:
        return _error(err, base_headers)
    except (TypeError, AttributeError, KeyError, ValueError) as e:
        if body is None:
            log.exception("unhandled error serving %s %s", method, request.url.path)
            return _error(ArmError(500, "InternalServerError", "The emulator hit an internal error."), base_headers)
        # a body of a shape the validation above did not foresee: refuse it as ARM's deserializer would
        log.warning("refused a %s %s body the emulator could not read: %r", method, request.url.path, e)
        return _error(ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be "
                               f"deserialized: {e.__class__.__name__}."), base_headers)
    except Exception:  # a bug, not bad input: say so in ARM's shape rather than drop the connection
        log.exception("unhandled error serving %s %s", method, request.url.path)
        return _error(ArmError(500, "InternalServerError", "The emulator hit an internal error."), base_headers)
    response.headers.update({**base_headers, **_throttle_headers(emu, sub)})
    return response


# ------------------------------------------------------------------ metadata, identity
async def metadata_endpoints(request: Request) -> Response:
    """What ``az cloud register --endpoint-resource-manager`` reads."""
    base = f"{request.url.scheme}://{request.url.netloc}"
    emu: Emulator = request.app.state.emu
    return _json({
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
        return _json({"error": "invalid_request", "error_description": "X-IDENTITY-HEADER is missing or wrong."},
                     401)
    resource = request.query_params.get("resource") or request.query_params.get("scope", "").removesuffix(
        "/.default")
    token, exp = emu.mint_jwt(resource or "https://management.azure.com/")
    return _json({"access_token": token, "expires_on": str(exp), "resource": resource,
                  "token_type": "Bearer", "client_id": str(uuid.UUID(int=2))})


class _CollapseSlashes:
    """``az cloud register --endpoint-resource-manager https://host/`` yields ``//metadata/...``: ARM shrugs."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and "//" in scope["path"]:
            scope = dict(scope, path=re.sub("/{2,}", "/", scope["path"]))
        await self.app(scope, receive, send)


def build_app(emu: Emulator) -> _CollapseSlashes:
    from vmssctl.emulator import control

    app = Starlette(routes=[
        Route("/metadata/endpoints", metadata_endpoints, methods=["GET"]),
        Route("/metadata/identity/oauth2/token", identity_token, methods=["GET"]),
        *control.routes(),
        Route("/{path:path}", arm_endpoint, methods=["GET", "PUT", "PATCH", "POST", "DELETE", "HEAD"]),
    ])
    app.state.emu = emu
    return _CollapseSlashes(app)
