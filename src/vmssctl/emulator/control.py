"""The emulator's admin API under ``/_emulator/``: observe it (stats, request log) and steer it
(faults, clock, throttling, image catalogue). Only the emulator's own token gets in.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from vmssctl.emulator import validate
from vmssctl.emulator.clock import iso
from vmssctl.emulator.envelope import bearer, error_response, json_response, read_body
from vmssctl.emulator.errors import ArmError
from vmssctl.emulator.faults import Throttle, ThrottleLimits
from vmssctl.emulator.images import is_version
from vmssctl.emulator.resources import availability
from vmssctl.emulator.runtime import Emulator


def _admin(fn: Callable) -> Callable:
    async def wrapped(request: Request) -> Response:
        emu: Emulator = request.app.state.emu
        token = bearer(request)
        if token is None or not hmac.compare_digest(token, emu.token):
            return json_response({"error": {"code": "AuthenticationFailed",
                                    "message": "The admin API needs the emulator's token (see emulator.json)."}},
                         401)
        body = None
        if request.method in ("POST", "PUT"):
            try:
                raw = await read_body(request)
                body = validate.parse_json(raw) if raw.strip() else {}
            except ArmError as err:
                return error_response(err)
            if not isinstance(body, dict):
                return json_response({"error": {"code": "InvalidRequestContent",
                                                "message": "Body must be an object."}}, 400)
        try:
            response = fn(emu, request, body)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            return json_response({"error": {"code": "InvalidParameter", "message": str(e)[:500]}}, 400)
        except ArmError as err:
            return error_response(err)
        if request.method in ("POST", "PUT") and not request.url.path.endswith(("/clock", "/stats/reset")):
            emu.world.touch(None)  # an admin call may change any set (a clock move: its steps say which)
        if request.method in ("POST", "PUT"):
            await emu.written()
        return response
    return wrapped


def _since(request: Request) -> float | None:
    raw = request.query_params.get("since")
    if not raw:
        return None
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError("since must be a finite number of epoch seconds")
    return value


@_admin
def admin_stats(emu: Emulator, request: Request, body: object) -> Response:
    world = emu.world
    world.advance()
    since = _since(request)
    records = request.query_params.get("records", "false").lower() in ("1", "true", "yes")
    return json_response({
        "now": world.now(), "timeScale": world.clock.scale, "requests": emu.stats.to_json(),
        "stateChanges": world.changes, "persistence": emu.persistence,
        "scaleSets": {f"{s.rg}/{s.name}": availability.since(s, since, records) for s in world.sets.values()},
        "traffic": [load.report() for load in world.loads.values()],
    })


@_admin
def admin_traffic(emu: Emulator, request: Request, body: dict | None) -> Response:
    """GET: every load and its counts (``?since=T``: also those from T on, as ``window``); POST: start one on a
    load balancer's rule (see network/traffic.py)."""
    world = emu.world
    if request.method == "POST":
        return json_response(world.traffic.start(body or {}).report(), 201)
    world.advance()
    since = _since(request)
    return json_response({"traffic": [{**load.report(), **({"window": load.window(since)} if since is not None
                                                           else {})} for load in world.loads.values()]})


@_admin
def admin_traffic_stop(emu: Emulator, request: Request, body: dict | None) -> Response:
    return json_response(emu.world.traffic.stop(request.path_params["tid"]).report())


@_admin
def admin_stats_reset(emu: Emulator, request: Request, body: object) -> Response:
    emu.stats.reset()
    return json_response(emu.stats.to_json())


@_admin
def admin_requests(emu: Emulator, request: Request, body: object) -> Response:
    after = validate.skiptoken(request.query_params.get("after"))
    return json_response({"requests": [r for r in emu.stats.log if r["seq"] > after], "lastSeq": emu.stats.seq})


@_admin
def admin_faults(emu: Emulator, request: Request, body: dict | None) -> Response:
    if request.method == "PUT":
        emu.faults.update(body or {})
        emu.world.changes += 1
    return json_response(emu.faults.to_json())


@_admin
def admin_permissions(emu: Emulator, request: Request, body: dict | None) -> Response:
    """The actions every caller is refused (``{"deny": [...]}``), as a role without them would."""
    if request.method == "PUT":
        emu.authorization.update(body or {})
    return json_response(emu.authorization.to_json())


@_admin
def admin_persistence(emu: Emulator, request: Request, body: dict | None) -> Response:
    """How the state is saved; ``{"failSaves": true}`` makes every save fail until false (how a failed save is
    said, and what a restart then does, are tested: a full disk cannot be made on demand)."""
    if request.method == "PUT":
        fail = (body or {}).get("failSaves")
        if not isinstance(fail, bool):
            raise ValueError("failSaves must be true or false")
        emu.persistence["inject"] = "fail" if fail else None
    return json_response(emu.persistence)


@_admin
def admin_throttle(emu: Emulator, request: Request, body: dict | None) -> Response:
    if request.method == "PUT":
        spec = (body or {}).get("limits", "")
        emu.throttle = Throttle(ThrottleLimits.parse(spec) if spec else ThrottleLimits(), emu.world.clock)
    lim = emu.throttle.limits
    return json_response({"enabled": lim.enabled, "reads": f"{lim.read_capacity:g}/{lim.read_rate:g}",
                  "writes": f"{lim.write_capacity:g}/{lim.write_rate:g}"})


@_admin
def admin_clock(emu: Emulator, request: Request, body: dict | None) -> Response:
    world = emu.world
    if request.method == "POST":
        body = body or {}
        scale = validate.number(body, "scale", 0, 100_000) if "scale" in body else None
        advance = validate.number(body, "advance", 0, 10 * 365 * 86400) if "advance" in body else None
        if scale is not None:
            world.clock.set_scale(scale)
        if advance is not None:
            world.clock.advance(advance)
        world.advance()
        world.changes += 1
    now = world.now()
    return json_response({"now": now, "iso": iso(now), "scale": world.clock.scale})


@_admin
def admin_images(emu: Emulator, request: Request, body: dict | None) -> Response:
    if request.method == "POST":
        body = body or {}
        if not is_version(body.get("version")) or not all(isinstance(body.get(k), str)
                                                          for k in ("publisher", "offer", "sku")):
            raise ValueError("publisher, offer, sku must be names and version Major.Minor.Build")
        where = body.get("locations")
        if where is not None and (not isinstance(where, list) or len(where) > 60 or
                                  not all(isinstance(x, str) and 0 < len(x) <= 64 for x in where)):
            raise ValueError("locations must be a list of at most 60 region names")
        emu.world.catalog.publish(body["publisher"], body["offer"], body["sku"], body["version"], where)
        emu.world.changes += 1
    return json_response(emu.world.catalog.dump())


@_admin
def admin_quota(emu: Emulator, request: Request, body: object) -> Response:
    """Lower (or raise) a region's vCPU quotas: what a refused scale-out or blue/green clone is tested against."""
    if request.method == "PUT":
        return json_response(emu.world.quotas.set_limits(body))
    location = request.query_params.get("location", "eastus")[:40]
    return json_response({"value": emu.world.quotas.usages(emu.world.subscription, location)})


@_admin
def admin_state(emu: Emulator, request: Request, body: object) -> Response:
    """The whole simulated state, exactly as it is saved (what a restart must bring back)."""
    return json_response(emu.world.dump())


def routes() -> list[Route]:
    return [
        Route("/_emulator/state", admin_state, methods=["GET"]),
        Route("/_emulator/stats", admin_stats, methods=["GET"]),
        Route("/_emulator/stats/reset", admin_stats_reset, methods=["POST"]),
        Route("/_emulator/requests", admin_requests, methods=["GET"]),
        Route("/_emulator/faults", admin_faults, methods=["GET", "PUT"]),
        Route("/_emulator/clock", admin_clock, methods=["GET", "POST"]),
        Route("/_emulator/throttle", admin_throttle, methods=["GET", "PUT"]),
        Route("/_emulator/persistence", admin_persistence, methods=["GET", "PUT"]),
        Route("/_emulator/permissions", admin_permissions, methods=["GET", "PUT"]),
        Route("/_emulator/images", admin_images, methods=["GET", "POST"]),
        Route("/_emulator/quota", admin_quota, methods=["GET", "PUT"]),
        Route("/_emulator/traffic", admin_traffic, methods=["GET", "POST"]),
        Route("/_emulator/traffic/{tid}/stop", admin_traffic_stop, methods=["POST"]),
    ]
