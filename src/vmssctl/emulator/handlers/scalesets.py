"""Microsoft.Compute/virtualMachineScaleSets: the sets, their set-wide actions and Azure's rolling upgrade."""

from __future__ import annotations

from starlette.responses import Response

from vmssctl.emulator import shapes
from vmssctl.emulator.envelope import Ctx, accepted, json_response, lro_headers, page
from vmssctl.emulator.errors import invalid
from vmssctl.emulator.resources.scalesets import ScaleSet


def list_all(ctx: Ctx) -> Response:
    return page(ctx, ctx.world.scale_sets.select(subscription=ctx.params["sub"]),
                lambda s: shapes.scale_set(ctx.world, s))


def list_in_group(ctx: Ctx) -> Response:
    return page(ctx, ctx.world.scale_sets.select(ctx.params["rg"]), lambda s: shapes.scale_set(ctx.world, s))


def _one(ctx: Ctx, ss: ScaleSet, status: int = 200, headers: dict | None = None) -> Response:
    return json_response(shapes.scale_set(ctx.world, ss), status, {"ETag": f'"{ss.etag}"', **(headers or {})})


def get(ctx: Ctx) -> Response:
    ss = ctx.world.scale_sets.get(ctx.params["rg"], ctx.params["name"])
    ctx.world.advance()
    return _one(ctx, ss)


def put(ctx: Ctx) -> Response:
    h = ctx.request.headers
    ss, op, created = ctx.world.scale_sets.put(ctx.params["rg"], ctx.params["name"], ctx.body,
                                               h.get("if-match"), h.get("if-none-match"))
    return _one(ctx, ss, 201 if created else 200, lro_headers(ctx, op, location=False))


def patch(ctx: Ctx) -> Response:
    ss, op = ctx.world.scale_sets.patch(ctx.params["rg"], ctx.params["name"], ctx.body,
                                        ctx.request.headers.get("if-match"))
    return _one(ctx, ss, 200, lro_headers(ctx, op, location=False))


def delete(ctx: Ctx) -> Response:
    world = ctx.world
    world.resource_groups.get(ctx.params["rg"])
    if (ctx.params["rg"].lower(), ctx.params["name"].lower()) not in world.sets:
        return Response(status_code=204)
    return accepted(ctx, world.scale_sets.delete(ctx.params["rg"], ctx.params["name"]))


def instance_view(ctx: Ctx) -> Response:
    ss = ctx.world.scale_sets.get(ctx.params["rg"], ctx.params["name"])
    ctx.world.advance()
    return json_response(shapes.set_instance_view(ctx.world, ss))


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


def action(ctx: Ctx) -> Response:
    """A set-wide action (``manualupgrade``, ``delete``, ``reimage``, ...) on the instances the body names."""
    name = ctx.params["action"]
    ids = _instance_ids(ctx, required=name in ("manualupgrade", "delete"))
    return accepted(ctx, ctx.world.vms.act(ctx.params["rg"], ctx.params["name"], name, ids))


def start_rolling(ctx: Ctx) -> Response:
    return accepted(ctx, ctx.world.rolling_upgrades.start(ctx.params["rg"], ctx.params["name"]))


def cancel_rolling(ctx: Ctx) -> Response:
    return accepted(ctx, ctx.world.rolling_upgrades.cancel(ctx.params["rg"], ctx.params["name"]))


def latest_rolling(ctx: Ctx) -> Response:
    ss, ru = ctx.world.rolling_upgrades.latest(ctx.params["rg"], ctx.params["name"])
    return json_response(shapes.rolling_status(ctx.world, ss, ru))
