"""Microsoft.Compute's subscription-level reads: operation status, the platform image catalogue, quota usages and
the VM sizes (resource SKUs)."""

from __future__ import annotations

from starlette.responses import Response

from vmssctl.emulator import shapes
from vmssctl.emulator.envelope import Ctx, json_response, retry_after


def get_operation(ctx: Ctx) -> Response:
    """``Azure-AsyncOperation`` (the status body) or, with ``monitor=true``, ``Location`` (202 until done)."""
    op = ctx.world.operations.status(ctx.params["op_id"])
    running = op.status == "InProgress"
    headers = retry_after(ctx, ctx.world.operations.remaining(op)) if running else {}
    if ctx.request.query_params.get("monitor", "").lower() == "true":
        if running:
            return Response(status_code=202, headers={**headers, "Location": str(ctx.request.url)})
        if op.status == "Failed":
            return json_response({"error": op.error}, 200)
        return Response(status_code=200)
    return json_response(shapes.operation(op), 200, headers)


def list_image_versions(ctx: Ctx) -> Response:
    """The versions of a platform image SKU published in the region: a bare JSON array, as Compute returns it."""
    p = ctx.params
    versions = ctx.world.catalog.versions(p["publisher"], p["offer"], p["sku"], p["location"])
    q = ctx.request.query_params
    if "desc" in q.get("$orderby", "").lower():
        versions.reverse()
    if q.get("$top", "").isascii() and q.get("$top", "").isdigit():
        versions = versions[: int(q["$top"])]
    base = _versions_id(p, ctx.world.subscription)
    return json_response([{"name": v, "location": p["location"], "id": f"{base}/{v}"} for v in versions])


def _versions_id(p: dict, subscription: str) -> str:
    """The id of a platform image SKU's versions in a region, as Compute spells it."""
    return (f"/Subscriptions/{subscription}/Providers/Microsoft.Compute/Locations/{p['location']}/"
            f"Publishers/{p['publisher']}/ArtifactTypes/VMImage/Offers/{p['offer']}/Skus/{p['sku']}/Versions")


def list_usages(ctx: Ctx) -> Response:
    """vCPUs used and allowed in a region: the total, and by VM family (``quota``)."""
    ctx.world.resource_groups.check_subscription(ctx.params["sub"])
    ctx.world.advance()
    return json_response({"value": ctx.world.quotas.usages(ctx.params["sub"], ctx.params["location"])})


def list_skus(ctx: Ctx) -> Response:
    """The resource SKUs of virtual machines, each with its family and vCPUs (``$filter=location eq 'x'``; without
    it, the world's default location)."""
    ctx.world.resource_groups.check_subscription(ctx.params["sub"])
    wanted = ctx.request.query_params.get("$filter", "")
    location = wanted.split("eq", 1)[1].strip().strip("'\" ").lower() if "eq" in wanted else "eastus"
    return json_response({"value": ctx.world.quotas.skus(location[:40])})


def get_image_version(ctx: Ctx) -> Response:
    """One platform image version in a region (404 when Compute does not have it there)."""
    p = ctx.params
    if not ctx.world.catalog.available(p["publisher"], p["offer"], p["sku"], p["version"], p["location"]):
        return json_response({"error": {"code": "NotFound", "message": "Artifact: VMImage was not found."}}, 404)
    return json_response({"name": p["version"], "location": p["location"],
                          "id": f"{_versions_id(p, p['sub'])}/{p['version']}",
                          "properties": {"osImage": {"operatingSystem": "Linux"}, "hyperVGeneration": "V2",
                                         "architecture": "x64", "dataDiskImages": []}})


def gallery_version(ctx: Ctx) -> Response:
    """A gallery image version: PUT publishes it to its target regions; GET (``$expand=ReplicationStatus``) says
    how far each region's replication is."""
    ctx.world.resource_groups.get(ctx.params["rg"])
    rid = str(ctx.request.url.path)
    rid = rid[rid.lower().index("/subscriptions/"):]
    if ctx.method == "PUT":
        return json_response(ctx.world.galleries.put_version(rid, ctx.body), 201)
    expand = "replicationstatus" in ctx.request.query_params.get("$expand", "").lower()
    return json_response(ctx.world.galleries.render(rid, expand))
