"""Blue/green: a new set beside the old one, in the same load balancer pools; traffic moved by draining the old
set; the old set kept drained for the bake, then scaled to 0 (or deleted); undone in the other order.

In process (the emulator's world through ``WorldGateway``, the engine on the world's clock, users' traffic on the
load balancer): the switch loses no request; a green that fails is drained and deleted while blue never stopped
serving; a rollback asked during the bake, or after blue was scaled to 0, brings blue back before green goes; a
crash at each write resumes with no second green set and no backend left Down. Over HTTPS with the SDK and the CLI:
Uniform and Flexible sets behind a load balancer, a good image and a bad one.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.helpers import (
    CONN,
    NEW,
    Crash,
    Events,
    Tripwire,
    dies_at_admin_write,
    gw_body,
    in_pool,
    lb_body,
    make_policy,
    make_set,
)
from vmssctl import upgrade
from vmssctl.emulator.clock import SimClock
from vmssctl.emulator.faults import FaultRule
from vmssctl.emulator.inprocess import WorldClock, WorldGateway
from vmssctl.emulator.resources import availability
from vmssctl.emulator.world import World
from vmssctl.errors import NotFound, PreconditionFailed, UsageError
from vmssctl.model import ImageRef
from vmssctl.rollout.engine import EXIT_FAILED, EXIT_OK
from vmssctl.rollout.gates import BAD, GOOD, Verdict
from vmssctl.rollout.journal import Journal
from vmssctl.rollout.strategies.blue_green import green_name
from vmssctl.target import ImageChange

GREEN = green_name("web", ImageRef(publisher="p", offer="o", sku="s", version=NEW))


def behind_a_load_balancer(capacity: int = 6, flexible: bool = False, gateway: bool = False) -> World:
    """Set web of ``capacity`` in load balancer lb's pool (probe every 5 s, 2 misses) or Application Gateway gw's
    (``gateway``; connection draining 60 s), settled, users' requests (100 a second, 0.2 s each) on its rule."""
    w = World(SimClock(0, start=1_000_000.0), seed=3)
    w.resource_groups.put("rg", "eastus")
    if gateway:
        w.app_gateways.put("rg", "gw", gw_body("rg"))
    else:
        w.load_balancers.put("rg", "lb", lb_body("rg"))
    w.scale_sets.put("rg", "web", in_pool(capacity, "rg", flexible=flexible, gateway=gateway))
    w.clock.advance(900)
    w.advance()
    front = {"applicationGateway": "gw"} if gateway else {"loadBalancer": "lb"}
    w.traffic.start({"resourceGroup": "rg", **front, "rule": "web", "rps": 100, "meanDurationSeconds": 0.2})
    return w


@dataclass
class AskOn(Events):
    """Events that ask the rollout for ``what`` (rollback) when ``on`` happens."""

    journal: Journal | None = None
    on: str = ""
    what: str = "rollback"

    def event(self, event: dict) -> None:
        super().event(event)
        if event["type"] == self.on and self.journal is not None:
            self.journal.request(event["rollout"], self.what)


def rollout(world, journal, gateway=None, sink=None, **policy) -> tuple[int, Events]:
    api = gateway or WorldGateway(world, "rg", "web")
    sink = sink or Events()
    settings = {"strategy": "blue-green", "bake": 300, "drain_timeout": 20, **policy}
    prepared = upgrade.prepare(api, journal, CONN, ImageChange(version=NEW), make_policy(**settings))
    return upgrade.start(api, journal, CONN, prepared, [sink], WorldClock(world)), sink


def users(world) -> dict:
    world.advance()
    return next(iter(world.loads.values())).report()


def sets(world) -> list[str]:
    return sorted(n for _, n in world.sets)


def admin_down(world) -> set[str]:
    """The VMs in the pool (of either set) that an admin state holds Down."""
    health = world.load_balancers.rule_health(world.load_balancers.get("rg", "lb"), "web")
    return {r["networkInterfaceIPConfigurationId"] for r in health["loadBalancerBackendAddresses"]
            if r["reason"] == "Admin state Down"}


def steps(sink: Events) -> list[str]:
    return [e["type"] for e in sink.events if e["type"].startswith(("green", "blue", "switch"))]


def test_green_takes_the_traffic_blue_is_drained_baked_and_scaled_to_zero_without_a_failed_request(tmp_path):
    world = behind_a_load_balancer()
    code, sink = rollout(world, Journal(tmp_path / "j.db"))
    assert code == EXIT_OK, sink.events[-3:]
    assert steps(sink) == ["green_creating", "green_ready", "switching", "blue_scaled_down", "switched"]
    blue, green = world.scale_sets.get("rg", "web"), world.scale_sets.get("rg", GREEN)
    assert blue.capacity == 0 and not blue.instances and blue.vm_profile["storageProfile"]["imageReference"][
        "version"] != NEW  # (its model kept: it comes back in minutes)
    assert green.capacity == 6 and all(availability.healthy(green, i) for i in green.instances.values())
    assert green.model["tags"]["vmssctl-rollout"] == sink.events[0]["rollout"]
    gw = world.load_balancers.get("rg", "lb")
    assert {m.ss.name for m in world.load_balancers.members(gw, "pool")} == {GREEN}  # green took blue's place
    switched = next(e["time"] for e in sink.of("switching"))
    retired = next(e["time"] for e in sink.of("blue_scaled_down"))
    assert retired - switched >= 300  # blue was kept through the bake
    assert next(e for e in sink.of("green_ready"))["time"] <= switched
    c = users(world)
    assert c["failed"] == 0 and c["served"] > 100 * (retired - switched), c  # nobody noticed
    assert admin_down(world) == set()


def test_a_green_that_fails_is_deleted_and_blue_never_stopped_serving(tmp_path):
    world = behind_a_load_balancer()
    world.faults.rules.append(FaultRule(match={"version": NEW}, effect="unhealthy"))
    since = world.now()
    code, sink = rollout(world, Journal(tmp_path / "j.db"), health_timeout=600)
    assert code == EXIT_FAILED
    assert steps(sink) == ["green_creating", "green_undoing", "green_draining", "green_deleted"]
    assert "green failed before the switch" in sink.of("green_undoing")[0]["reason"]
    world.advance(world.now() + 3600)
    assert sets(world) == ["web"]
    blue = world.scale_sets.get("rg", "web")
    assert min(r["healthy"] for r in availability.since(blue, since)["records"]) == 6 and blue.capacity == 6
    assert users(world)["failed"] == 0 and admin_down(world) == set()


@pytest.mark.parametrize("on, restored", [("switching", False), ("blue_scaled_down", True)])
def test_a_rollback_brings_blue_back_before_green_goes(tmp_path, on, restored):
    """Asked during the bake, blue is readmitted; asked once blue was scaled to 0, it is scaled back first. Either
    way green is drained only once blue serves again, then deleted: no request fails."""
    world = behind_a_load_balancer()
    journal = Journal(tmp_path / "j.db")
    code, sink = rollout(world, journal, sink=AskOn(journal=journal, on=on))
    assert code == EXIT_OK, sink.events[-3:]  # (a rollback asked for ends well)
    assert ("blue_restoring" in steps(sink)) is restored
    assert steps(sink)[-2:] == ["green_draining", "green_deleted"]
    world.advance(world.now() + 3600)
    assert sets(world) == ["web"]
    blue = world.scale_sets.get("rg", "web")
    assert len(blue.instances) == 6 and all(availability.healthy(blue, i) for i in blue.instances.values())
    assert users(world)["failed"] == 0 and admin_down(world) == set()
    assert journal.get(sink.events[0]["rollout"]).state == "rolled_back"


# each write of the green batch's record (issued, ready, switching, blue down, succeeded), and the ARM writes
@pytest.mark.parametrize("method, nth", [("clone", 1), ("set_capacity", 1), *(("set_batch", n) for n in range(1, 6))])
def test_a_crash_at_each_step_resumes_with_one_green_and_nothing_left_down(tmp_path, method, nth):
    world = behind_a_load_balancer()
    journal = Journal(tmp_path / "j.db")
    dead = [False]
    gateway = WorldGateway(world, "rg", "web")
    wired_journal = Tripwire(journal, method, nth, dead) if method == "set_batch" else journal
    wired_gateway = Tripwire(gateway, method, nth, dead) if method != "set_batch" else gateway
    with pytest.raises(Crash):
        rollout(world, wired_journal, wired_gateway)
    code, sink = rollout(world, journal)  # (run again: the same rollout is resumed)
    assert code == EXIT_OK, sink.events[-3:]
    assert sets(world) == sorted(["web", GREEN.lower()])
    assert world.scale_sets.get("rg", "web").capacity == 0 and admin_down(world) == set()
    assert users(world)["failed"] == 0


@pytest.mark.parametrize("policy, message", [
    ({"strategy": "in-place", "bake": 60}, "--bake applies to --strategy blue-green"),
    ({"strategy": "surge", "delete_blue": True}, "--delete-blue applies to --strategy blue-green"),
    ({"strategy": "blue-green", "drain": "hook", "drain_hook": "true"}, "does not apply to --strategy blue-green yet"),
    ({"strategy": "blue-green", "drain": "appgw", "green_weight": "2"}, "needs --drain lb"),
])
def test_blue_green_settings_where_they_do_not_apply_are_refused(policy, message):
    with pytest.raises(UsageError, match=message):
        make_policy(**policy)


def test_a_set_named_like_green_that_is_not_this_rollouts_is_refused_before_anything_changes(tmp_path):
    world = behind_a_load_balancer()
    world.scale_sets.put("rg", GREEN, in_pool(2, "rg"))
    with pytest.raises(UsageError, match=f"would create rg/{GREEN}, and a scale set of that name exists"):
        rollout(world, Journal(tmp_path / "j.db"))
    assert world.scale_sets.get("rg", "web").capacity == 6 and world.scale_sets.get("rg", GREEN).capacity == 2
    assert "vmssctl-rollout" not in world.scale_sets.get("rg", "web").model.get("tags", {})


def test_the_sdk_gateway_clones_a_set_once_and_deletes_it(emu):
    from vmssctl.azure import ScaleSetApi

    rg = make_set(emu, capacity=2)
    blue = ScaleSetApi(emu.client(), rg, "web")
    image = ImageRef(publisher="Canonical", offer="ubuntu-24_04-lts", sku="server", version=NEW)
    blue.clone("web-green", image, 3, {"vmssctl-rollout": "r-1"})
    with pytest.raises(PreconditionFailed):  # If-None-Match: a second clone overwrites nothing
        blue.clone("web-green", image, 5, {})
    green = blue.for_set("web-green")
    model = green.get()
    assert (model.capacity, model.image.version, model.tags.get("vmssctl-rollout")) == (3, NEW, "r-1")
    assert model.upgrade_mode == blue.get().upgrade_mode and model.vm_size == blue.get().vm_size
    emu.admin("POST", "clock", {"advance": 900})
    assert len(green.instances()) == 3 and all(i.healthy for i in green.instances())
    green.delete_set()
    emu.admin("POST", "clock", {"advance": 900})
    with pytest.raises(NotFound):
        green.get()
    assert blue.get().capacity == 2


@pytest.mark.parametrize("nth", [1, 2])
def test_a_crash_at_blues_drain_or_readmission_resumes_with_blue_serving(tmp_path, nth):
    """Blue's admin-state writes: 1 drains it at the switch (recorded first), 2 readmits it in the rollback asked
    right then. A crash at either, then resume: blue serves, green is gone, no request failed."""
    world = behind_a_load_balancer()
    journal = Journal(tmp_path / "j.db")
    dead = [False]
    gateway = dies_at_admin_write(world, nth, dead)
    with pytest.raises(Crash):
        rollout(world, Tripwire(journal, "-", 0, dead), gateway, sink=AskOn(journal=journal, on="switching"))
    code, sink = rollout(world, journal)
    assert code == EXIT_OK, sink.events[-3:]
    world.advance(world.now() + 3600)
    assert sets(world) == ["web"] and admin_down(world) == set()
    assert users(world)["failed"] == 0


@pytest.mark.parametrize("flexible", [False, True])
def test_vmssctl_upgrade_blue_green_over_https_then_a_bad_image_leaves_the_serving_set_alone(frozen, up, flexible):
    """The CLI through the SDK: green cloned (If-None-Match), judged, Up in the load balancer, blue drained, baked
    and scaled to 0; then a blue/green of that set to an image that never gets healthy: its green is deleted, the
    set that serves never stopped. Users' requests through the load balancer meanwhile: none failed."""
    from tests.helpers import set_behind_a_load_balancer

    rg, _ = set_behind_a_load_balancer(frozen, 3, flexible=flexible)
    tid = frozen.admin("POST", "traffic", {"resourceGroup": rg, "loadBalancer": "lb", "rule": "web", "rps": 30})["id"]
    bad = "24.04.202612010"
    frozen.admin("PUT", "faults", {"rules": [{"match": {"version": bad}, "effect": "unhealthy"}]})
    try:
        code, events, err = up(rg, "--version", NEW, "--strategy", "blue-green", "--bake", "60s",
                               "--drain-timeout", "15s")
        assert code == 0, (err, events[-3:])
        assert [e["type"] for e in events if e["type"] in ("green_ready", "switching", "blue_scaled_down")] == \
            ["green_ready", "switching", "blue_scaled_down"]
        compute = frozen.client()
        green = compute.virtual_machine_scale_sets.get(rg, GREEN)
        assert green.sku.capacity == 3 and green.virtual_machine_profile.storage_profile.image_reference.version == NEW
        assert compute.virtual_machine_scale_sets.get(rg, "web").sku.capacity == 0
        code, events, err = up(rg, "--version", bad, "--strategy", "blue-green", "--health-timeout", "5m",
                               name=GREEN)
        assert code == 1, (err, events[-3:])
        assert any(e["type"] == "green_deleted" for e in events)
        frozen.admin("POST", "clock", {"advance": 900})
        names = sorted(s.name for s in compute.virtual_machine_scale_sets.list(rg))
        assert names == sorted(["web", GREEN])  # the bad image's green set is gone
        users = next(x for x in frozen.admin("GET", "stats")["traffic"] if x["id"] == tid)
        assert users["failed"] == 0 and users["served"] > 0, users
    finally:
        frozen.admin("POST", f"traffic/{tid}/stop")
        frozen.admin("PUT", "faults", {"rules": []})


# ------------------------------------------------------------------------------ the phases, as a table
def _phase_case(meta: dict | None, seen: dict, verdicts: dict | None = None, now: float = 2_000.0,
                kind: str = "forward", blue: int = 3, elapsed: float = 100.0):
    from tests.test_decide import vm
    from vmssctl.rollout.journal import Batch
    from vmssctl.rollout.turn import Observation, Phase

    green = [Batch("r", 1, "forward", [], "issued", 1_000.0, None, [], meta)] if meta is not None else []
    phase = Phase(kind, tuple(green) if kind == "forward" else (), forward=tuple(green) if kind != "forward" else ())
    obs = Observation(now, tuple(vm(i) for i in range(blue)), verdicts=verdicts or {}, elapsed=elapsed, seen=seen)
    return obs, phase


_G = {"green": "web-2", "blue_capacity": 3, "green_capacity": 3}


def _green_vms(n: int = 3) -> dict:
    from tests.test_decide import NEW as NEW_IMAGE
    from tests.test_decide import vm

    return {"green": [vm(i, NEW_IMAGE) for i in range(n)], "tag": "r", "rollout": "r"}


def _good(n: int = 3) -> dict:
    return {str(i): Verdict(GOOD) for i in range(n)}


_UP = {str(i): {"up": True, "admin": "None", "drains": True, "gw": False} for i in range(3)}
_DOWN = {str(i): {"up": True, "admin": "Down", "drains": True, "gw": False} for i in range(3)}
_NOT_UP = {**_UP, "2": {"up": False, "admin": "None", "drains": True, "gw": False}}


@pytest.mark.parametrize("meta, seen, verdicts, now, kind, blue, expect", [
    # nothing yet: create green at blue's capacity
    (None, {}, None, 2_000.0, "forward", 3, ("CreateGreen", None)),
    # recorded, the create never landed: create it again, by the recorded name
    (_G, {"green": None}, None, 2_000.0, "forward", 3, ("CreateGreen", "web-2")),
    # a set of that name that is not this rollout's
    (_G, {**_green_vms(), "tag": "other"}, _good(), 2_000.0, "forward", 3, ("Finish", "not this rollout's")),
    # green coming up: wait
    (_G, _green_vms(2), _good(2), 2_000.0, "forward", 3, ("Wait", "green coming up")),
    # green healthy, not yet Up in the load balancers: wait; then ready
    (_G, {**_green_vms(), "lb_green": _NOT_UP}, _good(), 2_000.0, "forward", 3, ("Wait", "to see green Up")),
    (_G, {**_green_vms(), "lb_green": _UP}, _good(), 2_000.0, "forward", 3, ("Mark", "ready")),
    # ready: the switch drains blue's VMs still in rotation
    ({**_G, "ready": 1_500.0}, {**_green_vms(), "lb_blue": _UP}, _good(), 2_000.0, "forward", 3,
     ("DrainBlue", ("0", "1", "2"))),
    # drained, baking (bake 300 s from 1,800): wait; one readmitted by someone: Down again
    ({**_G, "ready": 1, "blue_drained": 1_800.0}, {**_green_vms(), "lb_blue": _DOWN}, _good(), 2_000.0, "forward", 3,
     ("Wait", "baking")),
    ({**_G, "ready": 1, "blue_drained": 1_800.0}, {**_green_vms(), "lb_blue": {**_DOWN, "1": _UP["1"]}}, _good(),
     2_000.0, "forward", 3, ("SetAdmin", ("1",))),
    # the bake is over: blue retired; then, blue empty: switched
    ({**_G, "ready": 1, "blue_drained": 1_800.0}, {**_green_vms(), "lb_blue": _DOWN}, _good(), 2_200.0, "forward", 3,
     ("RetireBlue", None)),
    ({**_G, "ready": 1, "blue_drained": 1_800.0, "blue_down": 2_100.0}, _green_vms(), _good(), 2_200.0, "forward", 0,
     ("Switched", None)),
    # green bad during the bake: undo; undoing: blue readmitted first, then green drained, then deleted
    ({**_G, "ready": 1, "blue_drained": 1_800.0}, _green_vms(), {**_good(), "1": Verdict(BAD, "unhealthy")}, 2_000.0,
     "forward", 3, ("BeginUndo", "after the switch")),
    ({**_G, "undo": "x", "undo_at": 1_900.0, "blue_drained": 1}, {**_green_vms(), "lb_blue": _DOWN, "lb_green": _UP},
     None, 2_000.0, "forward", 3, ("SetAdmin", ("0", "1", "2"))),
    ({**_G, "undo": "x", "undo_at": 1_900.0}, {**_green_vms(), "lb_blue": _NOT_UP, "lb_green": _UP}, None, 2_000.0,
     "forward", 3, ("Wait", "the old set to serve again")),
    ({**_G, "undo": "x", "undo_at": 1_900.0}, {**_green_vms(), "lb_blue": _UP, "lb_green": _UP}, None, 2_000.0,
     "forward", 3, ("DrainGreen", ("0", "1", "2"))),
    ({**_G, "undo": "x", "undo_at": 1_900.0, "green_drained": 1_990.0}, {**_green_vms(), "lb_blue": _UP,
                                                                          "lb_green": _DOWN}, None, 2_000.0, "forward",
     3, ("Wait", "draining green")),
    ({**_G, "undo": "x", "undo_at": 1_900.0, "green_drained": 1_900.0}, {**_green_vms(), "lb_blue": _UP}, None,
     2_000.0, "forward", 3, ("DeleteGreen", "x")),
    # blue scaled to 0 already: scaled back first; deleted: no way back but a new rollout
    ({**_G, "undo": "x", "undo_at": 1_900.0, "blue_down": 1}, _green_vms(), None, 2_000.0, "forward", 0,
     ("RestoreBlue", None)),
    ({**_G, "undo": "x", "undo_at": 1_900.0, "blue_down": 1, "blue_deleted": True}, _green_vms(), None, 2_000.0,
     "forward", 0, ("Finish", "the old set was deleted")),
    # a rollback: nothing created, nothing to do; else undo in a batch of its own
    (None, {}, None, 2_000.0, "rollback", 3, ("Finish", "done")),
    ({**_G, "ready": 1}, _green_vms(), None, 2_000.0, "rollback", 3, ("BeginUndo", "rollback requested")),
])
def test_blue_green_phases(meta, seen, verdicts, now, kind, blue, expect):
    from vmssctl.rollout.strategies.blue_green import BlueGreen

    obs, phase = _phase_case(meta, seen, verdicts, now, kind, blue)
    policy = make_policy(strategy="blue-green", bake=300, drain_timeout=20, drain="lb")
    action = BlueGreen().next(obs, phase, policy, lambda i: True, None)  # type: ignore[arg-type]
    name, detail = expect
    assert type(action).__name__ == name, action
    if isinstance(detail, tuple):
        assert tuple(getattr(action, "ids", ())) == detail, action
    elif detail is not None:
        said = " ".join(str(v) for v in vars(action).values())
        assert detail in said, action


@pytest.mark.parametrize("settings, limit, message", [
    # a second set of 6 D2s_v5 needs 12 vCPUs; 12 are in use
    ({"strategy": "blue-green"}, 20, "blue-green on rg/web: 6 more Standard_D2s_v5 VM(s) need 12 standardDSv5Family "
                                     "vCPUs; 8 of 20 are free"),
    ({"strategy": "surge", "max_surge": "6", "max_unavailable": None}, 20, "lower --max-surge (at most 4 fit)"),
    ({"strategy": "surge", "max_surge": "6", "max_unavailable": None, "surge_fallback": "in-place"}, 20, None),
    ({"strategy": "blue-green"}, 24, None),
])
def test_the_plan_checks_the_vcpu_quota_before_anything_changes(tmp_path, settings, limit, message):
    world = behind_a_load_balancer()
    world.quotas.set_limits({"location": "eastus", "limits": {"standardDSv5Family": limit}})
    api = WorldGateway(world, "rg", "web")
    policy = make_policy(**settings)
    if message:
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
            upgrade.prepare(api, Journal(tmp_path / "j.db"), CONN, ImageChange(version=NEW), policy)
        assert sets(world) == ["web"] and "vmssctl-rollout" not in world.scale_sets.get("rg", "web").model["tags"]
        return
    prepared = upgrade.prepare(api, Journal(tmp_path / "j.db"), CONN, ImageChange(version=NEW), policy)
    assert ("go on in place" in (prepared.quota or "")) is (settings["strategy"] == "surge")
    assert ("fit (standardDSv5Family: 12 of 24 free" in (prepared.quota or "")) is (limit == 24)


def test_compute_refuses_a_scale_out_past_the_quota_as_azure_words_it_over_https(emu):
    """The usages and resource SKUs APIs through the SDK; a scale-out past the limit refused (409
    OperationNotAllowed) with nothing changed."""
    from azure.core.exceptions import HttpResponseError

    from vmssctl.azure import ScaleSetApi

    rg = make_set(emu, capacity=2)
    emu.admin("PUT", "quota", {"location": "eastus", "limits": {"cores": 6}})
    try:
        quota = ScaleSetApi(emu.client(), rg, "web").quota("eastus", "Standard_D2s_v5")
        assert quota is not None and (quota.family, quota.vcpus) == ("standardDSv5Family", 2)
        assert quota.regional_limit == 6 and quota.fits() == quota.regional_free // 2
        compute = emu.client()
        with pytest.raises(HttpResponseError) as refused:
            compute.virtual_machine_scale_sets.begin_update(rg, "web", {"sku": {"capacity": 50}}).result()
        assert refused.value.error.code == "OperationNotAllowed"
        assert "exceeding approved Total Regional Cores quota" in refused.value.error.message
        assert compute.virtual_machine_scale_sets.get(rg, "web").sku.capacity == 2
    finally:
        emu.admin("PUT", "quota", {"location": "eastus", "limits": {"cores": 100_000}})


def test_arm_refusing_the_green_set_ends_the_rollout_with_nothing_created(tmp_path):
    """The quota taken by someone else between the plan and the create: Compute refuses the green set; the rollout
    fails with its words, blue untouched."""
    world = behind_a_load_balancer()
    api = WorldGateway(world, "rg", "web")
    journal = Journal(tmp_path / "j.db")
    prepared = upgrade.prepare(api, journal, CONN, ImageChange(version=NEW),
                               make_policy(strategy="blue-green", bake=60, drain_timeout=20))
    world.quotas.set_limits({"location": "eastus", "limits": {"cores": 14}})
    sink = Events()
    assert upgrade.start(api, journal, CONN, prepared, [sink], WorldClock(world)) == EXIT_FAILED
    assert "exceeding approved Total Regional Cores quota" in sink.of("green_refused")[0]["reason"]
    assert "nothing was created" in sink.of("rollout_failed")[0]["error"]
    assert sets(world) == ["web"] and world.scale_sets.get("rg", "web").capacity == 6
    assert users(world)["failed"] == 0 and admin_down(world) == set()


def test_green_weight_admits_a_share_of_green_first_then_all_of_it(tmp_path):
    """--green-weight 2: of green's 6 VMs, 2 take traffic beside blue for the pause (the others held Down from
    the moment they are in the pool), then all six, then the switch. No request fails."""
    world = behind_a_load_balancer()
    code, sink = rollout(world, Journal(tmp_path / "j.db"), green_weight="2", pause=300)
    assert code == EXIT_OK, sink.events[-3:]
    assert steps(sink) == ["green_creating", "green_weighted", "green_ready", "switching", "blue_scaled_down",
                           "switched"]
    weighted, ready = (next(e["time"] for e in sink.of(k)) for k in ("green_weighted", "green_ready"))
    assert sink.of("green_weighted")[0]["admitted"] == 2 and ready - weighted >= 300
    served = {k: v["served"] for k, v in users(world)["backends"].items() if k.startswith(GREEN)}
    first, rest = sorted(served.items())[:2], sorted(served.items())[2:]
    # the two admitted first served for the pause (about a quarter of 100 req/s among 8) before the rest began
    assert min(v for _, v in first) > max(v for _, v in rest) + 3_000, served
    assert users(world)["failed"] == 0 and admin_down(world) == set()
    with pytest.raises(UsageError, match="needs --drain lb"):
        make_policy(strategy="blue-green", green_weight="2", drain="none")


@pytest.mark.parametrize("ask", [None, "switching"])
def test_blue_green_behind_an_application_gateway_moves_vms_out_of_its_pool(tmp_path, ask):
    """--drain appgw: at the switch blue's VMs leave the gateway's pool (the gateway's connection draining lets
    their requests finish); a rollback asked then puts them back before green leaves it and is deleted."""
    world = behind_a_load_balancer(gateway=True)
    journal = Journal(tmp_path / "j.db")
    code, sink = rollout(world, journal, drain="appgw", sink=AskOn(journal=journal, on=ask or "-"))
    assert code == EXIT_OK, sink.events[-3:]
    gw = world.app_gateways.get("rg", "gw")
    members = {m.ss.name for m in world.app_gateways.members(gw, "pool")}
    if ask:
        world.advance(world.now() + 3600)
        assert sets(world) == ["web"] and members == {"web"}
        assert len(world.app_gateways.members(gw, "pool")) == 6
    else:
        assert members == {GREEN} and world.scale_sets.get("rg", "web").capacity == 0
        assert {e.get("by") for e in sink.of("drained")} == {"appgw"}
    assert users(world)["failed"] == 0
