"""The simulation on its own: no HTTP, a frozen clock moved by hand, so every state is exact."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from vmssctl.emulator import timing
from vmssctl.emulator.clock import SimClock
from vmssctl.emulator.errors import ArmError
from vmssctl.emulator.faults import FaultRule, Faults
from vmssctl.emulator.resources import availability
from vmssctl.emulator.server import demo_scale_set
from vmssctl.emulator.world import World


def make_world(capacity: int = 10, faults: Faults | None = None, **kwargs) -> World:
    world = World(SimClock(0, start=1_000_000.0), faults, seed=1)
    world.resource_groups.put("rg", "eastus")
    world.scale_sets.put("rg", "web", demo_scale_set(capacity, **kwargs))
    step(world, 600)
    return world


def step(world: World, seconds: float) -> None:
    world.clock.advance(seconds)
    world.advance()


def new_image(world: World, version: str = "2.0.0") -> None:
    world.scale_sets.patch("rg", "web", {"properties": {"virtualMachineProfile": {"storageProfile": {
        "imageReference": {"version": version}}}}})


def test_creation_runs_through_starting_to_healthy():
    world = World(SimClock(0, start=0.0), seed=1)
    world.resource_groups.put("rg", "eastus")
    ss, op, created = world.scale_sets.put("rg", "web", demo_scale_set(3))
    assert created and op.status == "InProgress" and ss.provisioning == "Creating"
    assert {i.power for i in ss.instances.values()} == {"starting"}
    step(world, timing.CREATE * (1 + timing.JITTER))
    assert op.status == "Succeeded" and ss.provisioning == "Succeeded"
    assert {i.health for i in ss.instances.values()} == {"initializing"}
    assert ss.healthy == 0 and ss.running == 3
    step(world, 60)
    assert ss.healthy == 3


def test_placement_balances_a_thousand_instances():
    world = make_world(1000)
    ss = world.sets["rg", "web"]
    cells = Counter((i.ud, i.fd) for i in ss.instances.values())
    assert len(cells) == 25 and max(cells.values()) - min(cells.values()) <= 1
    zonal = World(SimClock(0), seed=1)
    zonal.resource_groups.put("rg", "eastus")
    zs, _, _ = zonal.scale_sets.put("rg", "z", demo_scale_set(9, zones=["1", "2", "3"]))
    assert Counter(i.zone for i in zs.instances.values()) == {"1": 3, "2": 3, "3": 3}


def test_upgrade_timeline_and_exact_availability_record():
    world = make_world(5)
    ss = world.sets["rg", "web"]
    new_image(world)
    t0 = world.now()
    op = world.vms.act("rg", "web", "manualupgrade", ["0", "1"])
    inst = ss.instances[0]
    assert (inst.power, inst.provisioning) == ("stopping", "Updating") and ss.healthy == 3
    step(world, timing.STOP * (1 + timing.JITTER))
    assert inst.power == "stopped"
    step(world, (timing.REIMAGE + timing.BOOT) * (1 + timing.JITTER))
    assert op.status == "Succeeded" and inst.power == "running" and inst.health == "initializing"
    assert inst.profile == ss.profile_digest and inst.image["imageReference"]["exactVersion"] == "2.0.0"
    step(world, 60)
    assert ss.healthy == 5
    rec = availability.since(ss, t0)
    assert rec["minHealthy"] == 3 and rec["minRunning"] == 3
    assert all(r["time"] >= t0 for r in rec["records"][1:])


def test_instances_already_on_the_latest_model_are_left_alone():
    world = make_world(2)
    op = world.vms.act("rg", "web", "manualupgrade", ["0"])
    assert op.pending == [] and world.sets["rg", "web"].instances[0].power == "running"


def test_validation_happens_before_anything_changes():
    world = make_world(3)
    ss = world.sets["rg", "web"]
    etag = ss.etag
    with pytest.raises(ArmError) as e:
        world.vms.act("rg", "web", "manualupgrade", ["0", "99"])
    assert e.value.status == 400
    with pytest.raises(ArmError) as e:
        world.scale_sets.patch("rg", "web", {"properties": {"virtualMachineProfile": {"storageProfile": {
            "imageReference": {"id": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/images/x"}}}}})
    assert e.value.code == "PropertyChangeNotAllowed"
    with pytest.raises(ArmError):
        world.scale_sets.patch("rg", "web", {"properties": {"upgradePolicy": {"rollingUpgradePolicy": {
            "pauseTimeBetweenBatches": "two minutes"}}}})
    assert ss.etag == etag and all(i.op is None for i in ss.instances.values())


def test_rolling_upgrade_respects_batch_and_pause():
    world = make_world(10)
    ss = world.sets["rg", "web"]
    world.scale_sets.patch("rg", "web", {"properties": {"upgradePolicy": {"rollingUpgradePolicy": {
        "maxBatchInstancePercent": 30, "pauseTimeBetweenBatches": "PT5M"}}}})
    new_image(world)
    t0 = world.now()
    op = world.rolling_upgrades.start("rg", "web")
    assert len(ss.rolling.batch) == 3
    step(world, 3600)
    assert op.status == "Succeeded" and ss.rolling.code == "Completed"
    assert all(i.profile == ss.profile_digest for i in ss.instances.values())
    rec = availability.since(ss, t0)
    assert rec["minHealthy"] == 7
    # four batches (3+3+3+1) with three 5-minute pauses between them
    assert ss.rolling.end - t0 >= 3 * 300 + 4 * timing.upgrade_seconds() * (1 - timing.JITTER)


def test_a_max_surge_rolling_upgrade_replaces_vms_and_never_dips():
    world = make_world(10, mode="Rolling")
    ss = world.sets["rg", "web"]
    world.scale_sets.patch("rg", "web", {"properties": {"upgradePolicy": {"rollingUpgradePolicy": {
        "maxBatchInstancePercent": 20, "maxSurge": True}}}})
    t0 = world.now()
    new_image(world)  # a Rolling set starts its rolling upgrade on the model change
    assert ss.rolling.code == "RollingForward" and len(ss.rolling.batch) == 2
    assert ss.rolling.batch == [10, 11] and ss.rolling.replacing == [0, 1]
    step(world, 3600)
    assert ss.rolling.code == "Completed" and ss.capacity == 10
    assert sorted(ss.instances) == list(range(10, 20))  # every VM replaced by a new one
    assert all(i.profile == ss.profile_digest and i.upgrades == 0 for i in ss.instances.values())
    assert availability.since(ss, t0)["minHealthy"] >= 10


def test_a_max_surge_rolling_upgrade_with_a_bad_image_removes_its_new_vms():
    world = make_world(10, Faults([FaultRule({"version": "6.6.6"}, "unhealthy")]), mode="Rolling")
    ss = world.sets["rg", "web"]
    world.scale_sets.patch("rg", "web", {"properties": {"upgradePolicy": {"rollingUpgradePolicy": {
        "maxSurge": True, "maxUnhealthyUpgradedInstancePercent": 0}}}})
    new_image(world, "6.6.6")
    step(world, 3600)
    assert ss.rolling.code == "Faulted" and sorted(ss.instances) == list(range(10))
    with pytest.raises(ArmError, match="true or false"):
        world.scale_sets.patch("rg", "web",
                               {"properties": {"upgradePolicy": {"rollingUpgradePolicy": {"maxSurge": 1}}}})


def test_automatic_mode_upgrades_everything_at_once():
    world = make_world(4, mode="Automatic")
    ss = world.sets["rg", "web"]
    new_image(world)
    assert ss.healthy == 0  # the outage Automatic mode is known for
    step(world, 600)
    assert ss.healthy == 4 and all(i.profile == ss.profile_digest for i in ss.instances.values())


def test_faults_fail_slow_and_unhealthy():
    faults = Faults(rules=[FaultRule.parse("version=2.0.0,instanceId=1:fail"),
                           FaultRule.parse("version=2.0.0,instanceId=2:unhealthy"),
                           FaultRule.parse("version=2.0.0,instanceId=3:slow=10")])
    world = make_world(4, faults)
    ss = world.sets["rg", "web"]
    new_image(world)
    op = world.vms.act("rg", "web", "manualupgrade", ["0", "1", "2", "3"])
    step(world, 400)
    assert ss.instances[1].provisioning == "Failed" and ss.instances[1].error["code"] == "OSProvisioningTimedOut"
    assert ss.instances[2].health == "unhealthy" and ss.instances[0].health == "healthy"
    assert ss.instances[3].power != "running" and op.status == "InProgress"  # ten times slower
    step(world, 3000)
    assert op.status == "Failed" and op.error["code"] == "OSProvisioningTimedOut"
    assert "instance 1" in op.error["message"]


def test_scale_in_keeps_fault_domains_balanced_and_drops_highest_ids():
    world = make_world(10)
    ss = world.sets["rg", "web"]
    world.scale_sets.patch("rg", "web", {"sku": {"capacity": 5}})
    step(world, 600)
    assert sorted(ss.instances) == [0, 1, 2, 3, 4]
    assert len({i.fd for i in ss.instances.values()}) == 5


def test_dump_and_load_keep_in_flight_work():
    world = make_world(3)
    new_image(world)
    world.vms.act("rg", "web", "manualupgrade", ["0"])
    step(world, 30)
    state = json.loads(json.dumps(world.dump()))
    again = World.load(state, SimClock(0, start=state["now"]))
    ss = again.sets["rg", "web"]
    assert ss.instances[0].op == "upgrade"
    step(again, 600)
    assert ss.instances[0].profile == ss.profile_digest and ss.healthy == 3
    # the reloaded world continues exactly like the original
    step(world, 600)
    assert world.sets["rg", "web"].availability == ss.availability


@pytest.mark.parametrize("text", ["PT0S", "PT2M", "PT1H30M", "P1D", "PT0.5S"])
def test_iso_durations(text):
    assert timing.parse_iso_duration(text) >= 0


@pytest.mark.parametrize("text", ["", "P", "PT", "2m", "PT-1S"])
def test_bad_iso_durations(text):
    with pytest.raises(ValueError):
        timing.parse_iso_duration(text)


def test_throttle_buckets_refill_on_the_faster_clock():
    from vmssctl.emulator.faults import TokenBucket

    frozen = SimClock(0, start=0.0)
    bucket = TokenBucket(2, 1, frozen)
    assert bucket.take() and bucket.take() and not bucket.take()
    assert bucket.wait_seconds() == 1  # frozen: a real second brings a token back
    frozen.advance(5)  # simulated time counts too: a client polling in simulated time is not starved
    assert bucket.take() and bucket.take() and not bucket.take()
    fast = SimClock(600, start=0.0)
    assert TokenBucket(1, 0.5, fast).wait_seconds() == 1


# ------------------------------------------------------------- fidelity found in real Azure traffic
def test_a_rolling_policy_gets_computes_defaults_kept_on_every_read():
    world = make_world(2)
    ss = world.sets["rg", "web"]
    world.scale_sets.patch("rg", "web", {"properties": {"upgradePolicy": {"mode": "Rolling"}}})
    assert ss.model["properties"]["upgradePolicy"]["rollingUpgradePolicy"] == {
        "maxBatchInstancePercent": 20, "maxUnhealthyInstancePercent": 20,
        "maxUnhealthyUpgradedInstancePercent": 20, "pauseTimeBetweenBatches": "PT0S"}
    world.scale_sets.patch("rg", "web", {"properties": {"upgradePolicy": {"rollingUpgradePolicy": {
        "maxBatchInstancePercent": 50}}}})
    assert ss.model["properties"]["upgradePolicy"]["rollingUpgradePolicy"]["maxBatchInstancePercent"] == 50
    assert ss.model["properties"]["upgradePolicy"]["rollingUpgradePolicy"]["pauseTimeBetweenBatches"] == "PT0S"


def test_an_os_rolling_upgrade_moves_a_latest_model_to_the_newest_version():
    world = make_world(4, image={"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server",
                                 "version": "latest"}, mode="Rolling")
    ss = world.sets["rg", "web"]
    before = {i.image["imageReference"]["exactVersion"] for i in ss.instances.values()}
    world.catalog.publish("Canonical", "ubuntu-24_04-lts", "server", "99.0.0")
    op = world.rolling_upgrades.start("rg", "web")
    assert op.status == "InProgress" and ss.rolling.todo + ss.rolling.batch
    step(world, 3600)
    assert ss.rolling.code == "Completed" and before != {"99.0.0"}
    assert {i.image["imageReference"]["exactVersion"] for i in ss.instances.values()} == {"99.0.0"}


def test_a_numeric_string_capacity_is_taken_as_arm_takes_it_and_still_bounded():
    world = make_world(2)
    world.scale_sets.patch("rg", "web", {"sku": {"capacity": "3"}})
    assert world.sets["rg", "web"].capacity == 3
    for bad in ("1001", "3.5", "three", " "):
        with pytest.raises(ArmError):
            world.scale_sets.patch("rg", "web", {"sku": {"capacity": bad}})
    assert world.sets["rg", "web"].capacity == 3


def test_a_set_being_deleted_refuses_a_put_of_the_same_name_with_409():
    world = make_world(2)
    world.scale_sets.delete("rg", "web")
    with pytest.raises(ArmError) as e:
        world.scale_sets.put("rg", "web", demo_scale_set(2))
    assert e.value.status == 409
    step(world, 600)
    world.scale_sets.put("rg", "web", demo_scale_set(2))  # gone: the name is free again


# ------------------------------------------------------------------------------ Flexible orchestration
def test_a_flexible_set_owns_named_vms_without_update_domains():
    world = make_world(6, flexible=True, fault_domains=3)
    ss = world.sets["rg", "web"]
    names = [i.name for i in ss.instances.values()]
    assert all(n and n.startswith("web_") and len(n) == 12 for n in names) and len(set(names)) == 6
    assert {i.ud for i in ss.instances.values()} == {0}
    assert sorted(Counter(i.fd for i in ss.instances.values()).values()) == [2, 2, 2]
    assert [i.name for _, i in world.vms.flexible("rg")] == names
    new_image(world)
    op = world.vms.act("rg", "web", "manualupgrade", [names[0].upper(), names[1]])  # VM names, any case
    assert sorted(op.pending) == [0, 1]
    with pytest.raises(ArmError, match="not an active"):
        world.vms.act("rg", "web", "manualupgrade", ["0"])  # numbers name nothing in a Flexible set
    step(world, 600)
    assert availability.since(ss, None)["upgrades"] == {names[0]: 1, names[1]: 1}


def test_max_spreading_reports_one_fault_domain_and_flexible_needs_a_count():
    world = make_world(4, flexible=True)
    assert {i.fd for i in world.sets["rg", "web"].instances.values()} == {0}
    body = demo_scale_set(2, flexible=True)
    del body["properties"]["platformFaultDomainCount"]
    with pytest.raises(ArmError, match="platformFaultDomainCount"):
        world.scale_sets.put("rg", "other", body)
    with pytest.raises(ArmError, match="orchestrationMode"):
        world.scale_sets.patch("rg", "web", {"properties": {"orchestrationMode": "Uniform"}})


@pytest.mark.parametrize("kind, sets", [
    ("uniform", {"demo-rg/demo-vmss": 20}),
    ("flexible", {"demo-rg/demo-flex": 12}),
    ("rolling", {"demo-rg/demo-rolling": 10}),
    ("fleet", {"fleet-canary/web": 2, "fleet-east-1/web": 4, "fleet-east-2/web": 4, "fleet-west-1/web": 4,
               "fleet-west-2/web": 4}),
])
def test_each_demo_is_running_behind_a_load_balancer_and_seeding_again_changes_nothing(kind, sets):
    from vmssctl.emulator import DEMO_NEW
    from vmssctl.emulator.clock import SimClock
    from vmssctl.emulator.server import seed_demo

    world = World(SimClock(0, start=1_000_000.0), subscriptions=["00000000-0000-0000-0000-00000000feee"])
    seed_demo(world, kind)
    assert {f"{s.rg}/{s.name}": s.healthy for s in world.sets.values()} == sets
    members = sum(len(world.load_balancers.members(lb, "web")) for lb in world.lbs.values())
    assert members == sum(sets.values())
    assert DEMO_NEW in world.catalog.versions("Canonical", "ubuntu-24_04-lts", "server")
    if kind == "fleet":  # two subscriptions: the west groups in the second
        assert {world.resource_groups.subscription_of(g)[-4:] for g in world.groups.values()} == {"feed", "feee"}
    if kind == "flexible":
        assert all(s.flexible for s in world.sets.values())
    now = world.now()
    seed_demo(world, kind)  # a restart: nothing new, the clock where it was
    assert world.now() == now and len(world.sets) == len(sets)


def watched_saves(world: World, monkeypatch) -> tuple:
    """What the emulator's saves keep of ``world`` (``Saved``), what each save looked at (``World.parts``'s
    answers, in order), and a save: the rows it wrote (a whole save when nothing was saved yet, or ``full``)."""
    from vmssctl.emulator.persistence import Saved

    saved, looked = Saved({}), []
    parts = world.parts
    monkeypatch.setattr(world, "parts", lambda: looked.append(parts()) or looked[-1])

    def save(full: bool = False) -> dict:
        rows = saved.changes(world, full=full or not saved.rows)
        saved.done(rows)
        return rows
    return saved, looked, save


def test_a_sets_availability_record_is_saved_a_row_at_a_time(monkeypatch):
    """A set's availability record (a row for every change of its counts: thousands in a large set's rollout) is
    saved in rows of RECORDS_PER_ROW records: a save looks only at the rows new records went to, the rows give the
    record back whole, the rows of records dropped past the cap are deleted, and a set row of the older layout,
    holding its record itself, still loads."""
    import orjson

    from vmssctl.emulator.world import RECORDS_PER_ROW

    monkeypatch.setattr(availability, "CAP", 20 * RECORDS_PER_ROW)  # (what passes it goes two rows at a time)
    world = make_world(20)
    ss = world.sets["rg", "web"]
    saved, looked, save = watched_saves(world, monkeypatch)

    def record(rows: dict[str, bytes]) -> list:
        return [r for k in sorted((k for k in rows if k.startswith("avl:")), key=lambda k: int(k.rsplit(":", 1)[1]))
                for r in orjson.loads(rows[k])]

    save()
    for _ in range(200):  # restarts of every VM, until the record has passed its cap
        end = ss.availability_from + len(ss.availability)
        world.vms.act("rg", "web", "restart", None)
        world.touch("rg")
        step(world, 300)
        rows = save()
        seen = sorted(int(k.rsplit(":", 1)[1]) for k in looked[-1].parts if k.startswith("avl:"))
        assert seen == list(range(end // RECORDS_PER_ROW, (ss.availability_from + len(ss.availability) - 1)
                                  // RECORDS_PER_ROW + 1)), (end, seen)
        assert "availability" not in orjson.loads(saved.rows["set:rg/web"])
        if ss.availability_from:
            break
    assert ss.availability_from == 2 * RECORDS_PER_ROW
    assert {"avl:rg/web:0", "avl:rg/web:1"} <= {k for k, v in rows.items() if v is None}
    assert record(saved.rows) == ss.availability and len(ss.availability) > 10 * RECORDS_PER_ROW
    state = World.from_parts({k: orjson.loads(v) for k, v in saved.rows.items()})
    assert state["sets"][0]["availability"] == ss.availability
    assert state["sets"][0]["availability_from"] == 2 * RECORDS_PER_ROW
    older = {k: orjson.loads(v) for k, v in saved.rows.items() if not k.startswith("avl:")}
    older["set:rg/web"] = {**older["set:rg/web"], "availability": ss.availability}
    assert World.from_parts(older)["sets"][0]["availability"] == ss.availability


def test_a_write_to_a_group_saves_the_vms_it_changed_not_every_vm_of_its_sets(monkeypatch):
    """An ARM write makes every set of its resource group a candidate for the next save; of their VMs, only those
    whose etag moved since a save was given them are encoded and compared (every change to a VM bumps its etag),
    a VM gone has its row deleted, a whole save still gives every VM, and what is saved is always the whole
    state."""
    import orjson

    from vmssctl.emulator.persistence import encode

    world = make_world(40)
    saved, looked, saved_now = watched_saves(world, monkeypatch)

    def save(full: bool = False) -> tuple[set[str], dict]:
        rows = saved_now(full)
        seen = {k for k in looked[-1].parts if k.startswith("inst:")}
        whole = {k: encode(v) for k, v in world.all_parts().items() if k != "clock"}
        assert {k: v for k, v in saved.rows.items() if k != "clock"} == whole
        return seen, rows

    assert len(save()[0]) == 40
    world.touch("rg")  # (a whole save gives no VM its mark: the dumps and checks take every part that way too)
    assert len(save()[0]) == 40
    world.touch("rg")  # (a write that changed no VM: a refused one, a tag)
    assert save()[0] == set()
    world.vms.act("rg", "web", "restart", ["3", "7"])
    world.touch("rg")
    assert save()[0] == {"inst:rg/web:3", "inst:rg/web:7"}
    step(world, 300)  # (their steps ran: looked at as they ran, the set untouched)
    assert save()[0] == {"inst:rg/web:3", "inst:rg/web:7"}
    world.vms.act("rg", "web", "delete", ["5"])
    world.touch("rg")
    assert save()[0] == {"inst:rg/web:5"}
    step(world, 600)
    world.touch("rg")
    seen, rows = save()
    assert seen == set() and rows.get("inst:rg/web:5", b"") is None and "inst:rg/web:5" not in saved.rows
    assert len(save(full=True)[0]) == 39
    assert orjson.loads(saved.rows["inst:rg/web:3"])["etag"] == world.sets["rg", "web"].instances[3].etag
