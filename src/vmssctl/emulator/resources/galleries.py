"""Azure Compute Gallery image versions, as far as a rollout meets them: a version is published to target regions
and replicated to each in its own time (``publishingProfile.targetRegions``; ``replicationStatus`` with
``$expand=ReplicationStatus``: each region Replicating, then Completed). A scale set model naming a gallery
version that is not replicated to the set's region is refused, as Compute refuses it.

With an open catalogue (the tests' emulators, an in-process world) a version nobody published is taken as
replicated to every region the world's scale sets are in, as an open platform catalogue takes any version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmssctl.emulator.errors import ArmError, invalid, not_found
from vmssctl.emulator.resources.fields import region

if TYPE_CHECKING:
    from vmssctl.emulator.world import World

HOME_SECONDS = 300.0  # replication to the version's own region
REGION_SECONDS = 900.0  # and to each further target region, one after another


class Galleries:
    """The world's gallery image versions (``world.gallery_versions``: lower-case id -> record)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def put_version(self, rid: str, body: Any) -> dict:
        """Publish a version: ``location``, ``properties.publishingProfile.targetRegions`` [{name}] (its own
        region is always one); replication starts now, a region at a time."""
        w = self.world
        if not isinstance(body, dict) or not isinstance(body.get("location"), str):
            raise invalid("Required parameter 'location' is missing (null).", "location")
        profile = ((body.get("properties") or {}).get("publishingProfile") or {})
        targets = profile.get("targetRegions") or []
        if not isinstance(targets, list) or len(targets) > 50 or not all(
                isinstance(t, dict) and isinstance(t.get("name"), str) and 0 < len(t["name"]) <= 64 for t in targets):
            raise invalid("publishingProfile.targetRegions must be a list of at most 50 {name} regions.",
                          "properties.publishingProfile.targetRegions")
        home = region(body["location"])
        regions = [home, *[r for r in dict.fromkeys(region(t["name"]) for t in targets) if r != home]]
        now = w.now()
        done = {r: now + HOME_SECONDS + k * REGION_SECONDS for k, r in enumerate(regions)}
        w.gallery_versions[rid.lower()] = {"id": rid, "location": home, "regions": done, "created": now}
        w.changes += 1
        return self.render(rid)

    def render(self, rid: str, expand: bool = False) -> dict:
        rec = self._find(rid)
        now = self.world.now()
        done = rec["regions"]
        props: dict[str, Any] = {
            "provisioningState": "Succeeded" if now >= done[rec["location"]] else "Creating",
            "publishingProfile": {"targetRegions": [{"name": r, "regionalReplicaCount": 1} for r in done]}}
        if expand:
            summary = [{"region": r, "state": "Completed" if now >= t else "Replicating",
                        "progress": 100 if now >= t else int(100 * max(0.0, 1 - (t - now) / REGION_SECONDS))}
                       for r, t in done.items()]
            props["replicationStatus"] = {
                "aggregatedState": "Completed" if all(s["state"] == "Completed" for s in summary) else "InProgress",
                "summary": summary}
        return {"id": rec["id"], "name": rec["id"].rstrip("/").rsplit("/", 1)[-1], "location": rec["location"],
                "type": "Microsoft.Compute/galleries/images/versions", "properties": props}

    def _find(self, rid: str) -> dict:
        rec = self.world.gallery_versions.get(rid.lower())
        if rec is not None:
            return rec
        if self.world.catalog.strict:
            raise not_found("Microsoft.Compute/galleries/images/versions", rid.rstrip("/").rsplit("/", 1)[-1],
                            rid.split("/")[4] if rid.count("/") > 4 else "")
        # (open: replicated to every region the world's sets are in)
        regions = sorted({region(s.location) for s in self.world.sets.values()} | {"eastus"})
        return {"id": rid, "location": regions[0], "regions": dict.fromkeys(regions, 0.0), "created": 0.0}

    def check_available(self, ref: dict, location: str | None) -> None:
        """A model naming a gallery image version (``imageReference.id`` ending in /versions/V) not replicated to
        ``location`` is refused (a managed image, a gallery image without a version, a shared gallery's: not
        checked)."""
        rid = str(ref.get("id") or "")
        if "/versions/" not in rid.lower() or location is None:
            return
        rec = self.world.gallery_versions.get(rid.lower())
        if rec is None:
            if self.world.catalog.strict:
                raise _not_available(rid, location)
            return  # (open: a version nobody published is everywhere)
        when = rec["regions"].get(region(location))
        if when is None or self.world.now() < when:
            raise _not_available(rid, location)


def _not_available(rid: str, location: str) -> ArmError:
    return ArmError(404, "GalleryImageNotFound", f"The gallery image {rid} is not available in {region(location)} "
                    "region. Please contact image owner to replicate to this region, or change your requested "
                    "region.", "imageReference")
