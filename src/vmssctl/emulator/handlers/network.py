"""Microsoft.Network: load balancers (their children: frontends, pools, probes, rules; a pool's admin states, a
rule's health), Application Gateways (their backend health), and Network's own operation endpoints.

Network answers writes as its own provider does: a PUT is 201/200 with ``Azure-AsyncOperation`` (a Network
operation URL), a DELETE 202 with ``Location`` too, and a rule's health a 202 whose ``Location`` gives the result.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from vmssctl.emulator.envelope import Ctx, json_response, page
from vmssctl.emulator.errors import ArmError
from vmssctl.emulator.network.loadbalancers import CHILDREN
from vmssctl.emulator.resources.operations import Operation

KINDS = {k.lower(): k for k in CHILDREN}


def _op_urls(ctx: Ctx, op: Operation) -> dict[str, str]:
    base = (f"{ctx.base}/subscriptions/{ctx.params['sub']}/providers/Microsoft.Network/locations/{op.location}")
    query = f"?api-version={ctx.api_version}"
    return {"Azure-AsyncOperation": f"{base}/operations/{op.id}{query}",
            "Location": f"{base}/operationResults/{op.id}{query}"}


def _list(ctx: Ctx, store: Any, in_group: bool) -> Response:
    found = store.select(ctx.params["rg"]) if in_group else store.select(subscription=ctx.params["sub"])
    return page(ctx, found, store.render)


def _get(ctx: Ctx, store: Any, param: str) -> Response:
    ctx.world.advance()
    return json_response(store.render(store.get(ctx.params["rg"], ctx.params[param])))


def _put(ctx: Ctx, store: Any, param: str, operation: str) -> Response:
    h = ctx.request.headers
    res, created = store.put(ctx.params["rg"], ctx.params[param], ctx.body, h.get("if-match"), h.get("if-none-match"))
    op = ctx.world.operations.done(operation, res.location)
    headers = {"Azure-AsyncOperation": _op_urls(ctx, op)["Azure-AsyncOperation"]}
    return json_response(store.render(res), 201 if created else 200, headers)


def _delete(ctx: Ctx, store: Any, param: str, operation: str) -> Response:
    try:
        res = store.get(ctx.params["rg"], ctx.params[param])
    except ArmError:  # Network answers a DELETE of nothing with 204
        return Response(status_code=204)
    store.delete(res.rg, res.name)
    return Response(status_code=202, headers=_op_urls(ctx, ctx.world.operations.done(operation, res.location)))


def list_in_group(ctx: Ctx) -> Response:
    return _list(ctx, ctx.world.load_balancers, True)


def list_all(ctx: Ctx) -> Response:
    return _list(ctx, ctx.world.load_balancers, False)


def get(ctx: Ctx) -> Response:
    return _get(ctx, ctx.world.load_balancers, "lb")


def put(ctx: Ctx) -> Response:
    return _put(ctx, ctx.world.load_balancers, "lb", "PutLoadBalancer")


def delete(ctx: Ctx) -> Response:
    return _delete(ctx, ctx.world.load_balancers, "lb", "DeleteLoadBalancer")


# ------------------------------------------------------------------------ Application Gateways
def gateways_in_group(ctx: Ctx) -> Response:
    return _list(ctx, ctx.world.app_gateways, True)


def all_gateways(ctx: Ctx) -> Response:
    return _list(ctx, ctx.world.app_gateways, False)


def get_gateway(ctx: Ctx) -> Response:
    return _get(ctx, ctx.world.app_gateways, "gw")


def put_gateway(ctx: Ctx) -> Response:
    return _put(ctx, ctx.world.app_gateways, "gw", "PutApplicationGateway")


def delete_gateway(ctx: Ctx) -> Response:
    return _delete(ctx, ctx.world.app_gateways, "gw", "DeleteApplicationGateway")


def backend_health(ctx: Ctx) -> Response:
    """Each pool member's health under each backend setting, computed now; read back from the operation."""
    gws = ctx.world.app_gateways
    gw = gws.get(ctx.params["rg"], ctx.params["gw"])
    op = ctx.world.operations.done("ApplicationGatewayBackendHealth", gw.location, gws.backend_health(gw))
    return Response(status_code=202, headers=_op_urls(ctx, op))


# ------------------------------------------------------------------------ a load balancer's children
def list_children(ctx: Ctx) -> Response:
    lbs = ctx.world.load_balancers
    lb, kind = lbs.get(ctx.params["rg"], ctx.params["lb"]), KINDS[ctx.params["kind"]]
    ctx.world.advance()
    return page(ctx, lb.children(kind), lambda c: lbs.render_child(lb, kind, c["name"]))


def get_child(ctx: Ctx) -> Response:
    lbs = ctx.world.load_balancers
    lb, kind = lbs.get(ctx.params["rg"], ctx.params["lb"]), KINDS[ctx.params.get("kind", "backendaddresspools")]
    ctx.world.advance()
    return json_response(lbs.render_child(lb, kind, ctx.params["child"]))


def put_pool(ctx: Ctx) -> Response:
    lbs = ctx.world.load_balancers
    lb = lbs.put_pool(ctx.params["rg"], ctx.params["lb"], ctx.params["child"], ctx.body,
                      ctx.request.headers.get("if-match"))
    op = ctx.world.operations.done("PutLoadBalancerBackendAddressPool", lb.location)
    return json_response(lbs.render_child(lb, "backendAddressPools", ctx.params["child"]), 200,
                         {"Azure-AsyncOperation": _op_urls(ctx, op)["Azure-AsyncOperation"]})


def rule_health(ctx: Ctx) -> Response:
    """The health of a rule's backends, computed now; read back from the operation's Location."""
    lbs = ctx.world.load_balancers
    lb = lbs.get(ctx.params["rg"], ctx.params["lb"])
    op = ctx.world.operations.done("LoadBalancerRuleHealth", lb.location, lbs.rule_health(lb, ctx.params["rule"]))
    return Response(status_code=202, headers=_op_urls(ctx, op))


def operation_status(ctx: Ctx) -> Response:
    op = ctx.world.operations.status(ctx.params["op_id"])
    body: dict = {"status": op.status}
    if op.error:
        body["error"] = op.error
    return json_response(body)


def operation_result(ctx: Ctx) -> Response:
    op = ctx.world.operations.status(ctx.params["op_id"])
    if op.status == "InProgress":
        return Response(status_code=202, headers={"Location": str(ctx.request.url)})
    return json_response(op.result) if op.result is not None else Response(status_code=204)
