"""The rollout engine in-process, against the emulator's simulation through ``WorldGateway`` (no HTTP).

Each rollout here takes milliseconds to a few hundred: the engine's behaviour (floor, canary,
surge, protection, failures, crash and resume at every point) is covered here, and the HTTPS tests
(``test_upgrade``, ``test_surge``, ``test_crash_resume``) keep covering the wire, the CLI and kill -9.
The availability record is the emulator's own: every change of an instance's state is counted, so
its minimum healthy is an independent observer that never misses a dip between two polls.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import pytest

from tests.helpers import CONN, NEW, OLD, Crash, Events, Tripwire, make_policy
from vmssctl import upgrade
from vmssctl.emulator.inprocess import WorldClock, WorldGateway, create_set, frozen_world
from vmssctl.emulator.resources import availability
from vmssctl.emulator.world import World
from vmssctl.errors import UsageError
from vmssctl.policy import RolloutPolicy
from vmssctl.rollout.journal import Journal
from vmssctl.target import ImageChange


@dataclass
class Rig:
    world: World
    rg: str
    journal: Journal
    name: str = "web"

    @property
    def gateway(self) -> WorldGateway:
        return WorldGateway(self.world, self.rg, self.name)

    def since(self) -> float:
        return self.world.now()

    def record(self, since: float) -> dict:
        return availability.since(self.world.scale_sets.get(self.rg, self.name), since)

    def instances(self):
        return self.gateway.instances()

    def upgrade(self, version: str | None = NEW, gateway=None, journal=None, **policy) -> tuple[int, Events]:
        """``vmssctl upgrade``'s path without the CLI: prepare, begin, run the engine; (exit code, events)."""
        api, journal = gateway or self.gateway, journal or self.journal
        sink = Events()
        prepared = upgrade.prepare(api, journal, CONN, ImageChange(version=version), make_policy(**policy))
        code = upgrade.start(api, journal, CONN, prepared, [sink], WorldClock(self.world))
        return code, sink

    def crash_at(self, method: str, nth: int, on_journal: bool = False, **policy) -> Events:
        """Run an upgrade that dies at the nth call of ``method`` (gateway's or journal's); the events until then."""
        dead = [False]
        gateway = self.gateway if on_journal else Tripwire(self.gateway, method, nth, dead)
        journal = Tripwire(self.journal, method, nth, dead) if on_journal else Tripwire(self.journal, "-", 0, dead)
        sink = Events()
        with pytest.raises(Crash):
            prepared = upgrade.prepare(gateway, journal, CONN, ImageChange(version=NEW), make_policy(**policy))
            upgrade.start(gateway, journal, CONN, prepared, [sink], WorldClock(self.world))
        # the process is gone, and with it its claim on the set (the engine let go on the way out, as the kernel
        # would have)
        return sink


@pytest.fixture
def rig(tmp_path) -> Rig:
    world = frozen_world()
    create_set(world, "rg", capacity=10)
    return Rig(world, "rg", Journal(tmp_path / "journal.db"))


def make(tmp_path, capacity: int, seed: int = 0, **kwargs) -> Rig:
    world = frozen_world(seed)
    create_set(world, "rg", capacity=capacity, **kwargs)
    return Rig(world, "rg", Journal(tmp_path / "journal.db"))


def fault(world: World, effect: str, **match: str) -> None:
    world.faults.update({"rules": [{"match": match, "effect": effect}]})


# ---------------------------------------------------------------------------------------------- in place
@pytest.mark.parametrize(("policy", "floor", "sizes"), [
    ({}, 8, [2] * 5),
    ({"batch_size": 3}, 7, [3, 3, 3, 1]),
    ({"batch_percent": 50.0}, 5, [5, 5]),
    ({"by": "fault-domain"}, 8, [2] * 5),
    ({"by": "update-domain", "canary": 1}, 8, [1, 1, 2, 2, 2, 2]),
    ({"batch_size": 4, "max_unavailable": "2"}, 8, [2, 2, 2, 2, 2]),
])
def test_in_place_keeps_the_floor_and_upgrades_each_instance_once(rig, policy, floor, sizes):
    t0 = rig.since()
    code, out = rig.upgrade(**policy)
    assert code == 0, out.events[-1]
    assert [len(e["instances"]) for e in out.of("batch_started")] == sizes
    assert all(i.image.exact_version == NEW and i.healthy for i in rig.instances())
    rec = rig.record(t0)
    assert rec["minHealthy"] >= floor and rec["upgrades"] == {str(i): 1 for i in range(10)}
    assert {p.floor for p in out.progress} == {floor}
    assert out.progress[-1].done == 10 and out.progress[-1].batches_total == len(sizes)


def test_a_bad_canary_rolls_back_and_touches_nothing_else(rig):
    fault(rig.world, "unhealthy", version="6.6.6")
    t0 = rig.since()
    code, out = rig.upgrade("6.6.6", canary=1, rollback="auto", health_timeout=300.0)
    assert code == 1
    assert [e["type"] for e in out.events][-1] == "rollout_rolled_back"
    assert out.of("batch_failed")[0]["instances"] == ["0"]
    assert all(i.healthy and i.image.exact_version == OLD for i in rig.instances())
    assert rig.record(t0)["upgrades"] == {"0": 2}


def test_a_provisioning_failure_stops_at_its_batch(rig):
    fault(rig.world, "fail", instanceId="2", version=NEW)
    code, out = rig.upgrade(batch_size=2)
    assert code == 1 and "instance 2" in out.events[-1]["error"] and "OSProvisioningTimedOut" in out.events[-1]["error"]
    assert len(out.of("batch_started")) == 2


def test_max_unhealthy_upgraded_lets_one_failure_through(rig):
    fault(rig.world, "fail", instanceId="2", version=NEW)
    code, out = rig.upgrade(batch_size=2, max_unhealthy_upgraded="1")
    assert code == 0 and len(out.of("batch_failed")) == 1
    assert sum(i.image.exact_version == NEW and i.healthy for i in rig.instances()) == 9


def test_someone_elses_model_change_halts_without_overwriting(rig):
    api = rig.gateway
    real_upgrade = api.upgrade

    def meddle(ids):  # after the first batch is issued, someone else puts another image in the model
        real_upgrade(ids)
        ss = api.get()
        api.update(ss.etag, image=type(ss.image)(**{**ss.image.to_json(), "version": "9.9.9"}))

    api.upgrade = meddle  # type: ignore[method-assign]
    code, out = rig.upgrade(gateway=api)
    assert code == 1 and "9.9.9" in out.events[-1]["error"]
    assert len(out.of("batch_started")) == 1


def test_protected_instances_are_left_alone_and_reported(rig):
    inst = rig.world.scale_sets.get("rg", "web").instances[3]
    inst.protection = {"protectFromScaleSetActions": True}
    prepared = upgrade.prepare(rig.gateway, rig.journal, CONN, ImageChange(version=NEW),
                               RolloutPolicy(no_health_signal=True))
    assert prepared.protected == ["3"]
    code, _ = rig.upgrade()
    assert code == 0
    assert [i.instance_id for i in rig.instances() if i.image.exact_version == OLD] == ["3"]


def test_a_second_rollout_of_the_same_set_is_refused(rig, tmp_path):
    rig.crash_at("upgrade", 2)  # one rollout left unfinished in this journal; another journal tries
    other = Journal(tmp_path / "other.db")
    with pytest.raises(UsageError, match="another vmssctl rollout holds it"):
        upgrade.prepare(rig.gateway, other, CONN, ImageChange(version=NEW), RolloutPolicy(no_health_signal=True))


# ------------------------------------------------------------------------------------------ crash, resume
CRASH_POINTS = [("upgrade", 1), ("upgrade", 3), ("update", 1), ("update", 2), ("instances", 4),
                ("add_batch", 2), ("set_batch", 3), ("add_event", 5), ("observed", 6)]


@pytest.mark.parametrize(("method", "nth"), CRASH_POINTS)
def test_a_crash_anywhere_resumes_without_upgrading_twice(rig, method, nth):
    t0 = rig.since()
    rig.crash_at(method, nth, on_journal=method in ("add_batch", "set_batch", "add_event", "observed"),
                 batch_size=2)
    code, out = rig.upgrade(batch_size=2)  # running again is resuming
    assert code == 0, out.events[-1]
    rec = rig.record(t0)
    assert rec["upgrades"] == {str(i): 1 for i in range(10)} and rec["minHealthy"] >= 8
    assert all(i.image.exact_version == NEW and i.healthy for i in rig.instances())


# ------------------------------------------------------------------------------------------------- surge
@pytest.mark.parametrize(("capacity", "surge"), [(20, "25%"), (7, "3"), (900, "100")])
def test_surge_never_drops_below_the_capacity(tmp_path, capacity, surge):
    rig = make(tmp_path, capacity)
    t0 = rig.since()
    code, out = rig.upgrade(strategy="surge", max_surge=surge)
    assert code == 0, out.events[-1]
    vms = rig.instances()
    assert len(vms) == capacity and all(i.image.exact_version == NEW and i.healthy for i in vms)
    fds = Counter(i.fault_domain for i in vms).values()
    assert max(fds) - min(fds) <= 1
    assert rig.record(t0)["minHealthy"] >= capacity
    retired = [i for e in out.of("retiring") for i in e["instances"]]
    assert sorted(retired, key=int) == [str(i) for i in range(capacity)]


def test_surge_with_a_bad_image_removes_the_new_vms(tmp_path):
    rig = make(tmp_path, 8)
    fault(rig.world, "unhealthy", version="6.6.6")
    t0 = rig.since()
    code, out = rig.upgrade("6.6.6", strategy="surge", max_surge="2", health_timeout=300.0)
    assert code == 1 and out.of("batch_failed")
    rig.world.clock.advance(600)
    rig.world.advance()
    vms = rig.instances()
    assert sorted(i.instance_id for i in vms) == [str(i) for i in range(8)] and all(i.healthy for i in vms)
    assert rig.record(t0)["minHealthy"] >= 8


@pytest.mark.parametrize(("method", "nth"), [("set_capacity", 1), ("set_capacity", 2), ("delete", 1),
                                             ("delete", 3), ("set_batch", 4)])
def test_a_surge_crash_anywhere_neither_leaks_nor_double_deletes(tmp_path, method, nth):
    rig = make(tmp_path, 10)
    t0 = rig.since()
    rig.crash_at(method, nth, on_journal=method == "set_batch", strategy="surge", max_surge="3")
    code, out = rig.upgrade(strategy="surge", max_surge="3")
    assert code == 0, out.events[-1]
    rig.world.clock.advance(600)
    rig.world.advance()
    vms = rig.instances()
    assert len(vms) == 10 and all(i.image.exact_version == NEW and i.healthy for i in vms)
    assert rig.record(t0)["minHealthy"] >= 10


def test_a_refused_surge_stops_or_falls_back_in_place(tmp_path):
    rig = make(tmp_path, 1000)  # Compute's limit: a 1,000-VM set cannot grow
    code, out = rig.upgrade(strategy="surge", max_surge="5")
    assert code == 1 and "refused the surge's scale-out to 1005" in out.events[-1]["error"]
    assert not any(i.image.exact_version == NEW for i in rig.instances())
    code, out = rig.upgrade(strategy="surge", max_surge="5", surge_fallback="in-place", batch_size=100)
    assert code == 0 and out.of("surge_refused")[0]["fallback"] == "in-place"
    assert all(i.image.exact_version == NEW for i in rig.instances())


def test_the_in_process_reading_agrees_with_the_sdks(tmp_path):
    """WorldGateway reads instances without the SDK's models (for speed); the SDK reads the same VMs the same."""
    from vmssctl.azure import instance_from_arm
    from vmssctl.emulator import shapes

    rig = make(tmp_path, 6)
    rig.world.scale_sets.get("rg", "web").instances[1].protection = {"protectFromScaleIn": True}
    fault(rig.world, "fail", instanceId="2", version=NEW)
    api = rig.gateway
    api.upgrade(["2", "4"])
    for advance in (0, 20, 900):
        rig.world.clock.advance(advance)
        ss = rig.world.scale_sets.get("rg", "web")
        by_sdk = sorted((instance_from_arm(shapes.instance(rig.world, ss, i, True)) for i in ss.instances.values()),
                        key=lambda i: int(i.instance_id))
        mine = api.instances()
        assert [_but_time(i) for i in mine] == [_but_time(i) for i in by_sdk]
        for a, b in zip(mine, by_sdk, strict=True):  # ARM's ISO timestamps keep the millisecond, not the float
            assert (a.health_since is None) == (b.health_since is None)
            assert a.health_since is None or abs(a.health_since - b.health_since) <= 0.001


def test_reading_the_listings_json_agrees_with_the_sdks_models(tmp_path):
    """The gateway reads a listing's pages as JSON (building the SDK's models of every VM was most of a rollout's
    CPU): for every VM body the emulator serves in a rollout's life (upgrading, failed, protected, its own
    network configuration, healthy and not, a Flexible set's VMs in zones) and the Compute spec's examples, the
    JSON reading is the SDK models' reading, field for field (timestamps included)."""
    import json
    from pathlib import Path

    from azure.mgmt.compute import models as m

    from vmssctl.azure import instance_from_json, vm_from_json
    from vmssctl.emulator import shapes
    from vmssctl.model import ImageRef, Instance

    bodies, flexible = [], []
    rig = make(tmp_path, 6)
    ss = rig.world.scale_sets.get("rg", "web")
    ss.instances[1].protection = {"protectFromScaleIn": True, "protectFromScaleSetActions": True}
    fault(rig.world, "fail", instanceId="2", version=NEW)
    rig.gateway.upgrade(["2", "4"])
    for advance in (0, 20, 900):
        rig.world.clock.advance(advance)
        bodies += [shapes.instance(rig.world, ss, i, expand) for i in ss.instances.values() for expand in (True, False)]
    flex = frozen_world(1)
    create_set(flex, "rg", name="flex", capacity=3, flexible=True, zones=["1", "2", "3"])
    fs = flex.scale_sets.get("rg", "flex")
    flexible += [shapes.vm(flex, fs, i, True) for i in fs.instances.values()]
    examples = Path(__file__).parent / "spec_examples"
    listed = json.loads((examples / "VirtualMachineScaleSetVM_List_MaximumSet_Gen.json").read_text())
    bodies += listed["responses"]["200"]["body"]["value"]
    bodies.append({"instanceId": "7", "properties": {"instanceView": {"vmHealth": {"status": {  # 7 digits, Z
        "code": "HealthState/unhealthy", "time": "2026-11-30T15:04:05.1234567Z"}}}}})
    assert len(bodies) > 30 and any(b.get("zones") for b in flexible)
    for body in bodies:
        assert instance_from_json(body) == Instance.from_sdk(m.VirtualMachineScaleSetVM(body)), body
    image = ImageRef(**{k: v for k, v in fs.vm_profile["storageProfile"]["imageReference"].items()
                        if k in ("publisher", "offer", "sku", "version")})
    for body in flexible:
        assert vm_from_json(body, image) == Instance.from_vm(m.VirtualMachine(body), image), body


def _but_time(inst):
    return replace(inst, health_since=None)


def test_a_surge_canary_tries_the_image_on_one_new_vm_first(tmp_path):
    rig = make(tmp_path, 10)
    t0 = rig.since()
    code, out = rig.upgrade(strategy="surge", max_surge="4", canary=1)
    assert code == 0, out.events[-1]
    assert [e["adding"] for e in out.of("batch_started")] == [1, 4, 4, 1]
    assert [len(e["instances"]) for e in out.of("retiring")] == [1, 4, 4, 1]
    assert rig.record(t0)["minHealthy"] >= 10 and all(i.image.exact_version == NEW for i in rig.instances())


def test_a_bad_surge_canary_stops_before_the_second_batch(tmp_path):
    rig = make(tmp_path, 10)
    fault(rig.world, "unhealthy", version="6.6.6")
    code, out = rig.upgrade("6.6.6", strategy="surge", max_surge="4", canary=1, health_timeout=300.0)
    assert code == 1 and len(out.of("batch_started")) == 1 and out.of("batch_failed")[0]["removing"] != []


def test_a_surge_of_named_instances_replaces_only_those(tmp_path):
    rig = make(tmp_path, 10)
    t0 = rig.since()
    code, out = rig.upgrade(strategy="surge", max_surge="2", instances=("1", "4", "7"))
    assert code == 0, out.events[-1]
    retired = sorted(i for e in out.of("retiring") for i in e["instances"])
    assert retired == ["1", "4", "7"]
    vms = rig.instances()
    assert len(vms) == 10 and sum(i.image.exact_version == NEW for i in vms) == 3
    assert rig.record(t0)["minHealthy"] >= 10


# ------------------------------------------------------------------- Rolling and Automatic sets: Azure's upgrade
def rolling_rig(tmp_path, capacity: int = 10, mode: str = "Rolling", **rolling) -> Rig:
    rig = make(tmp_path, capacity, mode=mode)
    if rolling:
        rig.world.scale_sets.patch("rg", "web", {"properties": {"upgradePolicy": {"rollingUpgradePolicy": rolling}}})
    return rig


def test_a_rolling_set_is_upgraded_by_azures_rolling_upgrade_watched_batch_by_batch(tmp_path):
    rig = rolling_rig(tmp_path, maxBatchInstancePercent=30)
    t0 = rig.since()
    prepared = upgrade.prepare(rig.gateway, rig.journal, CONN, ImageChange(version=NEW), make_policy())
    assert prepared.policy.strategy == "azure-rolling" and [len(b) for b in prepared.plan.batches] == [3, 3, 3, 1]
    code, out = rig.upgrade()
    assert code == 0, out.events[-1]
    started = out.of("batch_started")
    assert [len(e["instances"]) for e in started] == [3, 3, 3, 1] and {e["by"] for e in started} == {"azure"}
    assert len(out.of("batch_succeeded")) == 4
    assert all(i.image.exact_version == NEW and i.healthy for i in rig.instances())
    rec = rig.record(t0)
    assert rec["minHealthy"] >= 7 and rec["upgrades"] == {str(i): 1 for i in range(10)}
    assert rig.world.scale_sets.get("rg", "web").rolling.code == "Completed"
    assert {p.floor for p in out.progress} == {7}
    # Azure pausing between its batches is said as that, not as the floor holding vmssctl back
    assert not out.of("waiting_for_floor")
    assert any(e["why"] == "Azure's rolling upgrade, between its batches" for e in out.of("waiting"))


def test_a_failing_gate_cancels_azures_rolling_upgrade_and_rolls_back(tmp_path):
    rig = rolling_rig(tmp_path, maxBatchInstancePercent=20, maxUnhealthyUpgradedInstancePercent=100)
    code, out = rig.upgrade(rollback="auto", gates=({"kind": "hook", "command": "exit 1"},), health_timeout=300.0)
    assert code == 1
    kinds = [e["type"] for e in out.events]
    assert "azure_upgrade_cancelled" in kinds and kinds[-1] == "rollout_rolled_back"
    assert out.of("batch_failed")[0]["phase"] == "forward"
    rig.world.clock.advance(3600)
    rig.world.advance()
    assert all(i.image.exact_version == OLD and i.healthy for i in rig.instances())
    forward = [e for e in out.of("batch_started") if e["phase"] == "forward"]
    assert len(forward) == 1  # Azure's next batch never started


@pytest.mark.parametrize("seed", [5, 34])  # (the emulator's jitter puts Azure mid-batch at the cancel)
def test_a_rollback_waits_for_the_instances_azures_cancelled_upgrade_has_in_flight(tmp_path, seed):
    """The gate passes Azure's first batch and fails its second; by then Azure is upgrading a third. Cancelled, it
    lets those finish on the new image. The rollback puts the old image back only once they have: were it put
    back first, Azure's upgrade back would start beside them, the first batch watched would take them for its own
    and wait for them to come back, which they do only in a later batch (the rollback failed, seeds 5 and 34)."""
    rig = make(tmp_path, 10, seed=seed, mode="Rolling")
    rig.world.scale_sets.patch("rg", "web", {"properties": {"upgradePolicy": {"rollingUpgradePolicy": {
        "maxBatchInstancePercent": 20}}}})
    code, out = rig.upgrade(rollback="auto", gates=({"kind": "hook", "command": "test $VMSSCTL_INSTANCE_ID -lt 2"},),
                            health_timeout=300.0)
    kinds = [e["type"] for e in out.events]
    assert code == 1 and "azure_upgrade_cancelled" in kinds and kinds[-1] == "rollout_rolled_back", out.events[-1]
    assert any("in flight finish first" in e["why"] for e in out.of("waiting"))
    failed = out.of("batch_failed")
    assert len(failed) == 1 and failed[0]["phase"] == "forward"
    rig.world.clock.advance(3600)
    rig.world.advance()
    assert all(i.image.exact_version == OLD and i.healthy for i in rig.instances())


def test_a_rollout_started_while_a_cancelled_upgrade_has_instances_in_flight_waits_for_them(tmp_path):
    """Someone's upgrade of a Rolling set to another version, cancelled mid-batch (an abort), then vmssctl at once:
    the instances in flight finish on that version first. Were the new model put in beside them, the first batch
    watched would take them for its own and wait for them to reach a version they are not moving to (the rollout
    failed so)."""
    rig = make(tmp_path, 10, mode="Rolling")
    world = rig.world
    world.scale_sets.patch("rg", "web", {"properties": {"upgradePolicy": {"rollingUpgradePolicy": {
        "maxBatchInstancePercent": 20}}}})
    world.scale_sets.patch("rg", "web", {"properties": {"virtualMachineProfile": {"storageProfile": {
        "imageReference": {"version": "24.04.202612300"}}}}})
    world.clock.advance(200)
    world.advance()
    assert any(i.op for i in world.scale_sets.get("rg", "web").instances.values())
    world.rolling_upgrades.cancel("rg", "web")
    code, out = rig.upgrade(health_timeout=300.0)
    assert code == 0, out.events[-1]
    assert any("in flight finish first" in e["why"] for e in out.of("waiting"))
    assert all(i.image.exact_version == NEW and i.healthy for i in rig.instances())


def test_an_automatic_set_needs_allow_automatic_and_then_says_so(tmp_path):
    from vmssctl import render

    rig = rolling_rig(tmp_path, mode="Automatic")
    with pytest.raises(UsageError, match="--allow-automatic"):
        rig.upgrade()
    prepared = upgrade.prepare(rig.gateway, rig.journal, CONN, ImageChange(version=NEW),
                               make_policy(allow_automatic=True))
    assert prepared.plan.floor == 0 and any("EVERY INSTANCE" in line for line in render.plan_lines(prepared))
    code, out = rig.upgrade(allow_automatic=True)
    assert code == 0 and len(out.of("batch_started")) == 1
    assert all(i.image.exact_version == NEW for i in rig.instances())


@pytest.mark.parametrize("flags", [{"canary": 1}, {"batch_size": 2}, {"strategy": "surge"}, {"by": "zone"}])
def test_flags_azure_would_decide_are_refused_on_a_rolling_set(tmp_path, flags):
    rig = rolling_rig(tmp_path)
    with pytest.raises(UsageError, match="Azure's own upgrade decides the batches"):
        rig.upgrade(**flags)
    assert rig.world.scale_sets.get("rg", "web").rolling is None  # nothing changed


def test_a_max_surge_rolling_set_keeps_every_vm_serving(tmp_path):
    rig = rolling_rig(tmp_path, maxBatchInstancePercent=20, maxSurge=True)
    t0 = rig.since()
    code, out = rig.upgrade()
    assert code == 0, out.events[-1]
    vms = rig.instances()
    assert len(vms) == 10 and all(int(i.instance_id) >= 10 and i.image.exact_version == NEW for i in vms)
    assert rig.record(t0)["minHealthy"] >= 10 and {p.floor for p in out.progress} == {10}


@pytest.mark.parametrize(("method", "nth"), [("rolling_status", 2), ("instances", 5), ("add_batch", 2)])
def test_a_crash_while_azure_rolls_reattaches_to_its_upgrade(tmp_path, method, nth):
    rig = rolling_rig(tmp_path, maxBatchInstancePercent=30)
    t0 = rig.since()
    rig.crash_at(method, nth, on_journal=method == "add_batch")
    code, out = rig.upgrade()
    assert code == 0, out.events[-1]
    assert out.events[0]["type"] == "rollout_resumed"
    assert all(i.image.exact_version == NEW and i.healthy for i in rig.instances())
    assert rig.record(t0)["upgrades"] == {str(i): 1 for i in range(10)}


# ------------------------------------------------------------------------------ Flexible orchestration
@pytest.mark.parametrize(("policy", "floor"), [
    ({"by": "fault-domain"}, 8), ({"by": "batch", "batch_size": 3}, 9), ({"strategy": "surge", "max_surge": "3"}, 12)])
def test_a_flexible_set_is_upgraded_by_vm_name_and_keeps_its_floor(tmp_path, policy, floor):
    rig = make(tmp_path, 12, flexible=True, fault_domains=3)
    names = sorted(i.instance_id for i in rig.instances())
    assert all(n.startswith("web_") for n in names)
    t0 = rig.since()
    code, out = rig.upgrade(**policy)
    assert code == 0, out.events[-1]
    vms = rig.instances()
    assert len(vms) == 12 and all(i.image.exact_version == NEW and i.healthy and i.latest_model for i in vms)
    assert rig.record(t0)["minHealthy"] >= floor and {p.floor for p in out.progress} == {floor}
    if "strategy" in policy:  # every old VM replaced by a new one, retired by name
        assert sorted(i for e in out.of("retiring") for i in e["instances"]) == names
    else:
        assert rig.record(t0)["upgrades"] == {n: 1 for n in names}


def test_a_flexible_set_has_no_update_domains_to_go_by(tmp_path):
    rig = make(tmp_path, 4, flexible=True)
    with pytest.raises(UsageError, match="no update domains"):
        rig.upgrade(by="update-domain")
    code, out = rig.upgrade(by="zone", instances=(rig.instances()[0].instance_id,))
    assert code == 0 and len(out.of("batch_started")) == 1


def test_batches_start_only_inside_the_maintenance_window(tmp_path):
    """A 4-minute daily window that opens 2 h from now: the first batches start in it, the next one waits for
    the next day's window; every batch starts inside one."""
    from vmssctl.rollout import windows

    rig = make(tmp_path, 6)
    now = rig.world.now()
    opens = now - now % 60 + 7200
    hhmm = lambda t: f"{int(t % 86400 // 3600):02d}:{int(t % 3600 // 60):02d}"  # noqa: E731
    window = f"daily {hhmm(opens)}-{hhmm(opens + 240)}"
    code, out = rig.upgrade(batch_size=2, windows=(window,))
    assert code == 0, out.events[-1]
    starts = [e["time"] for e in out.of("batch_started")]
    assert len(starts) == 3 and starts[0] >= opens
    assert all(windows.is_open((window,), t) for t in starts)
    assert starts[-1] - opens >= 86400  # one batch waited for the next day's window
    said = [e for e in out.of("waiting") if "outside the maintenance windows: the next opens" in e["why"]]
    assert len(said) == 2 and said[0]["seconds"] >= 7000, said  # each long wait said once, when it begins


def test_a_flexible_rolling_set_goes_through_azures_rolling_upgrade(tmp_path):
    rig = make(tmp_path, 6, flexible=True, fault_domains=2, mode="Rolling")
    t0 = rig.since()
    code, out = rig.upgrade()
    assert code == 0, out.events[-1]
    assert {e["by"] for e in out.of("batch_started")} == {"azure"} and len(out.of("batch_started")) == 6
    vms = rig.instances()
    assert all(i.image.exact_version == NEW and i.healthy and i.instance_id.startswith("web_") for i in vms)
    assert rig.record(t0)["minHealthy"] >= 5


@pytest.mark.parametrize("state, said", [("running", " (+4 in flight)"), ("aborted", " (+4 started, never judged)"),
                                         ("succeeded", "")])
def test_every_view_says_the_batch_in_flight_beside_the_judged_count(state, said):
    from vmssctl.rollout.progress import Progress, summary

    p = Progress("r-1", "rg/web", "forward", state, "v2", 2, 5, 1, 20, 15, 20, 16, 100.0, 50.0, True, 0.0,
                 current=("1", "2", "3", "4") if said else ())
    assert f"1/20 upgraded{said}," in summary(p)


def test_reading_a_sets_json_agrees_with_the_sdks_model():
    """The gateway reads its set's model as JSON (building the SDK's models of a set cost more than the request):
    for sets of every kind the engine meets (health extension with and without a grace period, a load balancer
    probe, no signal, Rolling with and without maxSurge, load balancer and Application Gateway pools named twice,
    Flexible, zones, platform / gallery / custom images, an unmanaged disk's image) and the Compute spec's
    examples, the JSON reading is the SDK model's reading, field for field (tags too)."""
    import copy
    import json
    from pathlib import Path

    from vmssctl.azure import scale_set_from_arm, scale_set_from_json
    from vmssctl.emulator import shapes
    from vmssctl.emulator.server import demo_scale_set

    def ipc(body: dict) -> dict:
        return body["properties"]["virtualMachineProfile"]["networkProfile"]["networkInterfaceConfigurations"][0][
            "properties"]["ipConfigurations"][0]["properties"]

    pool = "/subscriptions/s/resourceGroups/net/providers/Microsoft.Network/loadBalancers/lb/backendAddressPools/"
    gw = "/subscriptions/s/resourceGroups/net/providers/Microsoft.Network/applicationGateways/gw/backendAddressPools/"
    bodies = [demo_scale_set(3), demo_scale_set(3, health=False), demo_scale_set(3, mode="Rolling"),
              demo_scale_set(3, flexible=True, zones=["1", "2", "3"]),
              demo_scale_set(3, image={"id": "/subscriptions/s/resourceGroups/img/providers/Microsoft.Compute/"
                                             "galleries/g/images/web/versions/1.2.3"})]
    fronted = copy.deepcopy(bodies[1])
    ipc(fronted).update(loadBalancerBackendAddressPools=[{"id": pool + "a"}, {"id": pool + "b"}],
                        applicationGatewayBackendAddressPools=[{"id": gw + "web"}])
    fronted["properties"]["virtualMachineProfile"]["networkProfile"]["healthProbe"] = {"id": pool + "probe"}
    fronted["properties"]["virtualMachineProfile"]["networkProfile"]["networkInterfaceConfigurations"].append(
        copy.deepcopy(fronted["properties"]["virtualMachineProfile"]["networkProfile"][
            "networkInterfaceConfigurations"][0]))  # (a second NIC naming the same pools: each once)
    surge = demo_scale_set(3, mode="Rolling")
    surge["properties"]["upgradePolicy"]["rollingUpgradePolicy"] = {"maxBatchInstancePercent": 33, "maxSurge": True}
    bodies += [fronted, surge]
    for grace in (600, "600", True, -1, 20000):  # (only a number within 0 to 4 hours is a grace period)
        graced = demo_scale_set(3)
        ext = graced["properties"]["virtualMachineProfile"]["extensionProfile"]["extensions"][0]["properties"]
        ext["settings"] = {**(ext.get("settings") or {}), "gracePeriod": grace}
        bodies.append(graced)
    twice = demo_scale_set(3)  # (two health extensions, only the second with a grace period: it counts)
    exts = twice["properties"]["virtualMachineProfile"]["extensionProfile"]["extensions"]
    exts.append(copy.deepcopy(exts[0]))
    exts[1]["name"] = "health2"
    exts[0]["properties"]["settings"] = {**(exts[0]["properties"].get("settings") or {}), "gracePeriod": "soon"}
    exts[1]["properties"]["settings"] = {**(exts[1]["properties"].get("settings") or {}), "gracePeriod": 900}
    bodies.append(twice)
    world = frozen_world(1)
    for name, kwargs in (("web", {}), ("roll", {"mode": "Rolling"}), ("flex", {"flexible": True, "zones": ["1"]})):
        create_set(world, "rg", name=name, capacity=2, **kwargs)
        bodies.append(shapes.scale_set(world, world.scale_sets.get("rg", name)))
    examples = Path(__file__).parent / "spec_examples"
    for path in sorted(examples.glob("VirtualMachineScaleSet_[CG]*.json")):
        example = json.loads(path.read_text())
        bodies += [r["body"] for r in example["responses"].values() if "virtualMachineProfile" in
                   (r.get("body") or {}).get("properties", {})]
    assert len(bodies) > 20
    for body in bodies:
        mine, sdk = scale_set_from_json(body, "rg"), scale_set_from_arm(body, "rg")
        assert (mine, mine.tags) == (sdk, sdk.tags), body
