"""A scale set's VMs: ``virtualMachineScaleSets/{name}/virtualMachines`` (Uniform) and, for a Flexible set,
the ordinary ``virtualMachines`` of its resource group."""

from __future__ import annotations

import re

from starlette.responses import Response

from vmssctl import inputs
from vmssctl.emulator import shapes
from vmssctl.emulator.envelope import Ctx, accepted, json_response, lro_headers, page
from vmssctl.emulator.errors import ArmError, invalid

FILTER_RE = re.compile(r"^\s*properties/latestModelApplied\s+eq\s+(true|false)\s*$", re.I)
VM_SET_FILTER_RE = re.compile(r"^\s*'?virtualMachineScaleSet/id'?\s+eq\s+'([^']+)'\s*$", re.I)


def list_in_set(ctx: Ctx) -> Response:
    world = ctx.world
    ss = world.scale_sets.get(ctx.params["rg"], ctx.params["name"])
    world.advance()
    q = ctx.request.query_params
    ids = sorted(ss.instances)  # (by instance id: ints, sorted without a key)
    if "$filter" in q:
        m = FILTER_RE.match(q["$filter"])
        if not m:
            raise invalid(f"The $filter '{q['$filter']}' is not supported: use "
                          "'properties/latestModelApplied eq true|false'.", "$filter")
        want = m.group(1).lower() == "true"
        digest = ss.profile_digest
        ids = [k for k in ids if (ss.instances[k].profile == digest) == want]
    expand = q.get("$expand", "").lower()
    if expand and expand != "instanceview":
        raise invalid(f"The $expand '{q['$expand']}' is not supported: use 'instanceView'.", "$expand")
    select = {s.strip().lower() for s in q["$select"].split(",")} if q.get("$select") else None

    def render(iid: int) -> dict:
        with_view = bool(expand) or (select is not None and "instanceview" in select)
        body = shapes.instance(world, ss, ss.instances[iid], with_view)
        if select is not None:
            body["properties"] = {k: v for k, v in body["properties"].items() if k.lower() in select}
        return body
    if select is None:  # (only the page's own VMs are looked up)
        return page(ctx, ids, render, lambda iid: shapes.encoded_instance(world, ss, ss.instances[iid], bool(expand)))
    return page(ctx, ids, render)


def get(ctx: Ctx) -> Response:
    ss, inst = ctx.world.vms.get(ctx.params["rg"], ctx.params["name"], ctx.params["iid"])
    expand = ctx.request.query_params.get("$expand", "").lower() == "instanceview"
    return json_response(shapes.instance(ctx.world, ss, inst, expand), headers={"ETag": f'"{inst.etag}"'})


def put(ctx: Ctx) -> Response:
    h = ctx.request.headers
    ss, inst, op = ctx.world.vms.update(ctx.params["rg"], ctx.params["name"], ctx.params["iid"], ctx.body,
                                        h.get("if-match"), h.get("if-none-match"))
    return json_response(shapes.instance(ctx.world, ss, inst, False), 200, lro_headers(ctx, op, location=False))


def delete(ctx: Ctx) -> Response:
    world = ctx.world
    ss = world.scale_sets.get(ctx.params["rg"], ctx.params["name"])
    try:
        inst = ss.instances.get(int(ctx.params["iid"]))
    except ValueError:
        inst = None
    if inst is None or inst.op == "delete":
        return Response(status_code=204)
    return accepted(ctx, world.vms.act(ctx.params["rg"], ctx.params["name"], "delete", [ctx.params["iid"]]))


def instance_view(ctx: Ctx) -> Response:
    ss, inst = ctx.world.vms.get(ctx.params["rg"], ctx.params["name"], ctx.params["iid"])
    return json_response(shapes.instance_view(ss, inst))


def action(ctx: Ctx) -> Response:
    ctx.world.vms.get(ctx.params["rg"], ctx.params["name"], ctx.params["iid"])
    return accepted(ctx, ctx.world.vms.act(ctx.params["rg"], ctx.params["name"], ctx.params["action"],
                                           [ctx.params["iid"]]))


# ----------------------------------------------------------------- a Flexible set's virtual machines
def list_flexible(ctx: Ctx) -> Response:
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
    found = ctx.world.vms.flexible(ctx.params["rg"], set_id)
    return page(ctx, found, lambda x: shapes.vm(ctx.world, x[0], x[1], bool(expand)))


def get_flexible(ctx: Ctx) -> Response:
    ss, inst = ctx.world.vms.find(ctx.params["rg"], ctx.params["vm"])
    expand = ctx.request.query_params.get("$expand", "").lower() == "instanceview"
    return json_response(shapes.vm(ctx.world, ss, inst, expand), headers={"ETag": f'"{inst.etag}"'})


def flexible_instance_view(ctx: Ctx) -> Response:
    ss, inst = ctx.world.vms.find(ctx.params["rg"], ctx.params["vm"])
    return json_response(shapes.instance_view(ss, inst))


def flexible_action(ctx: Ctx) -> Response:
    ss, inst = ctx.world.vms.find(ctx.params["rg"], ctx.params["vm"])
    return accepted(ctx, ctx.world.vms.act(ss.rg, ss.name, ctx.params["action"], [inst.external_id]))


def delete_flexible(ctx: Ctx) -> Response:
    try:
        ss, inst = ctx.world.vms.find(ctx.params["rg"], ctx.params["vm"])
    except ArmError:
        return Response(status_code=204)
    if inst.op == "delete":
        return Response(status_code=204)
    return accepted(ctx, ctx.world.vms.act(ss.rg, ss.name, "delete", [inst.external_id]))
