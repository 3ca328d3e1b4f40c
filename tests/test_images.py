"""Knowing the image before changing anything: the emulator's catalogue is strict as Azure's (a platform version
published, in a region; a gallery version replicated to a region, in its own time), the model update naming one
that is not there is refused as Compute refuses it, and vmssctl's plan refuses it first (exit 2, nothing
written), or with --wait-for-image waits for the replication before the model changes."""

from __future__ import annotations

import pytest

from tests.helpers import CONN, NEW, Events, make_policy
from vmssctl import upgrade
from vmssctl.emulator.clock import SimClock
from vmssctl.emulator.errors import ArmError
from vmssctl.emulator.inprocess import WorldClock, WorldGateway, create_set
from vmssctl.emulator.server import demo_scale_set
from vmssctl.emulator.world import World
from vmssctl.errors import UsageError
from vmssctl.rollout.engine import EXIT_OK
from vmssctl.rollout.journal import Journal
from vmssctl.target import ImageChange

GALLERY = "/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/galleries/gal/images/web/versions/{v}"


def strict_world() -> World:
    w = World(SimClock(0, start=1_000_000.0), seed=2)
    create_set(w, "rg", capacity=4)
    w.catalog.strict = True
    return w


def test_a_strict_catalogue_refuses_what_compute_does_not_have_in_the_region():
    w = strict_world()
    with pytest.raises(ArmError, match="is not available") as refused:
        w.scale_sets.patch("rg", "web", {"properties": {"virtualMachineProfile": {"storageProfile": {
            "imageReference": {"version": "24.04.202611299"}}}}})
    assert refused.value.status == 404 and refused.value.code == "PlatformImageNotFound"
    w.catalog.publish("Canonical", "ubuntu-24_04-lts", "server", NEW, ["westeurope"])  # not in eastus
    with pytest.raises(ArmError, match="not available in eastus"):
        w.scale_sets.patch("rg", "web", {"properties": {"virtualMachineProfile": {"storageProfile": {
            "imageReference": {"version": NEW}}}}})
    assert w.catalog.versions("Canonical", "ubuntu-24_04-lts", "server", "eastus") == ["24.04.202610010"]
    w.catalog.publish("Canonical", "ubuntu-24_04-lts", "server", NEW)  # now everywhere
    w.scale_sets.patch("rg", "web", {"properties": {"virtualMachineProfile": {"storageProfile": {
        "imageReference": {"version": "latest"}}}}})
    assert w.scale_sets.resolve_image(w.scale_sets.get("rg", "web").vm_profile["storageProfile"], "eastus")[
        "imageReference"]["exactVersion"] == NEW


def _gallery_version(w: World, v: str, regions: list[str]) -> str:
    rid = GALLERY.format(sub=w.subscription, v=v)
    w.galleries.put_version(rid, {"location": "westeurope", "properties": {"publishingProfile": {
        "targetRegions": [{"name": r} for r in regions]}}})
    return rid


def test_the_plan_refuses_an_image_not_in_the_sets_region_before_anything_changes(tmp_path):
    w = strict_world()
    api = WorldGateway(w, "rg", "web")
    with pytest.raises(UsageError, match=r"24.04.202611299 is not published in eastus \(newest: 24.04.202610010\); "
                                         "nothing was changed"):
        upgrade.prepare(api, Journal(tmp_path / "j.db"), CONN, ImageChange(version="24.04.202611299"),
                        make_policy(max_unavailable="2"))
    assert "vmssctl-rollout" not in w.scale_sets.get("rg", "web").model.get("tags", {})


def test_wait_for_image_waits_for_the_replication_then_upgrades(tmp_path):
    """A gallery version still replicating to eastus: refused without --wait-for-image (saying it would wait), and
    with it the rollout waits (on the world's clock) until the region has it, then changes the model."""
    w = World(SimClock(0, start=1_000_000.0), seed=2)
    w.catalog.strict = True
    w.resource_groups.put("rg", "eastus")
    old = _gallery_version(w, "1.0.0", ["eastus"])  # the image the set runs, replicated long ago
    w.clock.advance(3600)
    w.scale_sets.put("rg", "web", demo_scale_set(4, image={"id": old}))
    w.clock.advance(900)
    w.advance()
    api = WorldGateway(w, "rg", "web")
    elsewhere = _gallery_version(w, "1.5.0", ["westeurope", "northeurope"])  # never to eastus
    with pytest.raises(UsageError, match=r"is not replicated to eastus \(target regions: westeurope, northeurope\)"):
        upgrade.prepare(api, Journal(tmp_path / "j.db"), CONN, ImageChange(image_id=elsewhere),
                        make_policy(max_unavailable="2"))
    new = _gallery_version(w, "2.0.0", ["eastus"])  # westeurope first, eastus 900 s later
    with pytest.raises(UsageError, match=r"still replicating to eastus \(0 %\); nothing was changed \(--wait"):
        upgrade.prepare(api, Journal(tmp_path / "j.db"), CONN, ImageChange(image_id=new),
                        make_policy(max_unavailable="2"))
    policy = make_policy(max_unavailable="2", wait_for_image=3600)
    prepared = upgrade.prepare(api, Journal(tmp_path / "j.db"), CONN, ImageChange(image_id=new), policy)
    assert "the rollout waits up to 3600s" in (prepared.image or "")
    t0, sink = w.now(), Events()
    assert upgrade.start(api, Journal(tmp_path / "j.db"), CONN, prepared, [sink], WorldClock(w)) == EXIT_OK
    waited = sink.of("waiting")[0]
    assert waited["why"] == "the image to be replicated to eastus"
    updated = sink.of("model_updated")[0]["time"]
    assert updated - t0 >= 1200 - 60  # not before eastus had it (its replication ends 1,200 s in)
    assert all(i.image.get("imageReference", {}).get("id") == new for i in
               w.scale_sets.get("rg", "web").instances.values())


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    from tests.conftest import start_emulator

    e = start_emulator(tmp_path_factory.mktemp("strict-emu"), "--images", "strict", "--time-scale", "0",
                       "--throttle", "off")
    yield e
    e.stop()


def test_the_strict_emulator_over_https_refuses_as_compute_and_vmssctl_refuses_first(strict, capsys, tmp_path):
    """The SDK: a model naming an unpublished version is refused (404 PlatformImageNotFound), the image API
    says so too; a gallery version's replication as the SDK reads it. The CLI: exit 2, one line, nothing
    written; a published version goes through."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    from tests.helpers import make_set
    from vmssctl.cli import main

    rg = make_set(strict, 2)
    compute = strict.client()
    with pytest.raises(HttpResponseError) as refused:
        compute.virtual_machine_scale_sets.begin_update(rg, "web", {"properties": {"virtualMachineProfile": {
            "storageProfile": {"imageReference": {"version": "24.04.202611299"}}}}}, polling=False)
    assert refused.value.status_code == 404 and refused.value.error.code == "PlatformImageNotFound"
    with pytest.raises(ResourceNotFoundError):
        compute.virtual_machine_images.get("eastus", "Canonical", "ubuntu-24_04-lts", "server", "24.04.202611299")
    flags = ["-g", rg, "-n", "web", "--emulator", str(strict.state_dir), "--journal", str(tmp_path / "j.sqlite"),
             "--yes", "--max-unavailable", "1"]
    assert main(["upgrade", *flags, "--version", "24.04.202611299"]) == 2
    err = capsys.readouterr().err
    assert "is not published in eastus (newest: 24.04.202610010); nothing was changed" in err
    assert "vmssctl-rollout" not in (compute.virtual_machine_scale_sets.get(rg, "web").tags or {})
    strict.admin("POST", "images", {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server",
                                    "version": NEW})
    assert compute.virtual_machine_images.get("eastus", "Canonical", "ubuntu-24_04-lts", "server", NEW).name == NEW
    assert main(["upgrade", *flags, "--version", NEW, "-o", "json"]) == 0
    capsys.readouterr()
    # a gallery version published to two regions: the SDK reads its replication region by region
    versions = compute.gallery_image_versions
    versions.begin_create_or_update(rg, "gal", "web", "2.0.0", {"location": "westeurope", "properties": {
        "publishingProfile": {"targetRegions": [{"name": "westeurope"}, {"name": "eastus"}]}}}, polling=False)
    strict.admin("POST", "clock", {"advance": 600})
    status = versions.get(rg, "gal", "web", "2.0.0", expand="ReplicationStatus").replication_status
    assert [(s.region, str(getattr(s.state, "value", s.state))) for s in status.summary] == [
        ("westeurope", "Completed"), ("eastus", "Replicating")]
