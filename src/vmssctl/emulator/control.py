"""The emulator's admin API under ``/_emulator/``: observe it (stats, request log) and steer it
(faults, clock, throttling, image catalogue). Only the emulator's own token gets in.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from vmssctl.emulator.arm import Emulator, _bearer, _error, _json
from vmssctl.emulator.clock import iso
from vmssctl.emulator.errors import ArmError
from vmssctl.emulator.faults import Throttle, ThrottleLimits
from vmssctl.emulator.images import VERSION_RE


def _admin(fn: Callable) -> Callable:
    async def wrapped(request: Request) -> Response:
        emu: Emulator = request.app.state.emu
        token = _bearer(request)
        if token is None or not hmac.compare_digest(token, emu.token):
            return _json({"error": {"code": "AuthenticationFailed",
                                    "message": "The admin API needs the emulator's token (see emulator.json)."}},
                         401)
        body = None
        if request.method in ("POST", "PUT"):
            raw = await request.body()
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError as e:
                return _json({"error": {"code": "InvalidRequestContent", "message": f"Malformed JSON: {e}"}}, 400)
            if not isinstance(body, dict):
                return _json({"error": {"code": "InvalidRequestContent", "message": "Body must be an object."}}, 400)
        try:
            return fn(emu, request, body)
        except (ValueError, TypeError, KeyError) as e:
            return _json({"error": {"code": "InvalidParameter", "message": str(e)}}, 400)
        except ArmError as err:
            return _error(err)
    return wrapped


def _since(request: Request) -> float | None:
    raw = request.query_params.get("since")
    return float(raw) if raw else None


@_admin
def admin_stats(emu: Emulator, request: Request, body: object) -> Response:
    world = emu.world
    world.advance()
    since = _since(request)
    records = request.query_params.get("records", "false").lower() in ("1", "true", "yes")
    return _json({
        "now": world.now(), "timeScale": world.clock.scale, "requests": emu.stats.to_json(),
        "scaleSets": {f"{s.rg}/{s.name}": world.availability_since(s, since, records) for s in world.sets.values()},
    })


@_admin
def admin_stats_reset(emu: Emulator, request: Request, body: object) -> Response:
    emu.stats.reset()
    return _json(emu.stats.to_json())


@_admin
def admin_requests(emu: Emulator, request: Request, body: object) -> Response:
    after = int(request.query_params.get("after", "0"))
    return _json({"requests": [r for r in emu.stats.log if r["seq"] > after], "lastSeq": emu.stats.seq})


@_admin
def admin_faults(emu: Emulator, request: Request, body: dict | None) -> Response:
    if request.method == "PUT":
        emu.faults.update(body or {})
        emu.world.changes += 1
    return _json(emu.faults.to_json())


@_admin
def admin_throttle(emu: Emulator, request: Request, body: dict | None) -> Response:
    if request.method == "PUT":
        spec = (body or {}).get("limits", "")
        emu.throttle = Throttle(ThrottleLimits.parse(spec) if spec else ThrottleLimits(), emu.world.clock)
    lim = emu.throttle.limits
    return _json({"enabled": lim.enabled, "reads": f"{lim.read_capacity:g}/{lim.read_rate:g}",
                  "writes": f"{lim.write_capacity:g}/{lim.write_rate:g}"})


@_admin
def admin_clock(emu: Emulator, request: Request, body: dict | None) -> Response:
    world = emu.world
    if request.method == "POST":
        body = body or {}
        if "scale" in body:
            world.clock.set_scale(float(body["scale"]))
        if "advance" in body:
            world.clock.advance(float(body["advance"]))
        world.advance()
        world.changes += 1
    now = world.now()
    return _json({"now": now, "iso": iso(now), "scale": world.clock.scale})


@_admin
def admin_images(emu: Emulator, request: Request, body: dict | None) -> Response:
    if request.method == "POST":
        body = body or {}
        if not VERSION_RE.match(str(body.get("version", ""))):
            raise ValueError("version must be Major.Minor.Build")
        emu.world.catalog.publish(body["publisher"], body["offer"], body["sku"], body["version"])
        emu.world.changes += 1
    return _json(emu.world.catalog.dump())


def routes() -> list[Route]:
    return [
        Route("/_emulator/stats", admin_stats, methods=["GET"]),
        Route("/_emulator/stats/reset", admin_stats_reset, methods=["POST"]),
        Route("/_emulator/requests", admin_requests, methods=["GET"]),
        Route("/_emulator/faults", admin_faults, methods=["GET", "PUT"]),
        Route("/_emulator/clock", admin_clock, methods=["GET", "POST"]),
        Route("/_emulator/throttle", admin_throttle, methods=["GET", "PUT"]),
        Route("/_emulator/images", admin_images, methods=["GET", "POST"]),
    ]
