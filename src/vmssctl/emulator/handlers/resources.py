"""Microsoft.Resources: subscriptions and resource groups."""

from __future__ import annotations

from starlette.responses import Response

from vmssctl.emulator import shapes
from vmssctl.emulator.envelope import Ctx, accepted, json_response
from vmssctl.emulator.errors import invalid


def list_subscriptions(ctx: Ctx) -> Response:
    subs = ctx.world.subscriptions
    return json_response({"value": [shapes.subscription(ctx.world, x) for x in subs],
                          "count": {"type": "Total", "value": len(subs)}})


def get_subscription(ctx: Ctx) -> Response:
    ctx.world.resource_groups.check_subscription(ctx.params["sub"])
    return json_response(shapes.subscription(ctx.world, ctx.params["sub"]))


def list_groups(ctx: Ctx) -> Response:
    sub = ctx.params["sub"]
    return json_response({"value": [shapes.group(sub, g) for g in ctx.world.groups.values()
                                    if ctx.world.resource_groups.subscription_of(g).lower() == sub.lower()]})


def get_group(ctx: Ctx) -> Response:
    return json_response(shapes.group(ctx.params["sub"], ctx.world.resource_groups.get(ctx.params["rg"])))


def head_group(ctx: Ctx) -> Response:
    return Response(status_code=204 if ctx.params["rg"].lower() in ctx.world.groups else 404)


def put_group(ctx: Ctx) -> Response:
    body = ctx.body if isinstance(ctx.body, dict) else {}
    if not body.get("location"):
        raise invalid("Required parameter 'location' is missing (null).", "location")
    grp, created = ctx.world.resource_groups.put(ctx.params["rg"], body["location"], body.get("tags"),
                                                 ctx.params["sub"])
    return json_response(shapes.group(ctx.params["sub"], grp), 201 if created else 200)


def delete_group(ctx: Ctx) -> Response:
    return accepted(ctx, ctx.world.resource_groups.delete(ctx.params["rg"]))


def permissions(ctx: Ctx) -> Response:
    """``…/providers/Microsoft.Authorization/permissions``: what the caller may do at this scope."""
    return json_response(ctx.emu.authorization.permissions())
