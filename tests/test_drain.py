"""Draining through the load balancer (``--drain lb``): in process, the engine on the emulator's world with a load
balancer in front of the set and users' traffic through it. Drained, an in-place rollout fails no request the
probe's lag or a stop would have cost; a crash at each drain point resumes with nothing left Down and nothing
upgraded twice; a rollout that stops early readmits what it drained.
"""

from __future__ import annotations

import pytest

from tests.helpers import (
    CONN,
    NEW,
    Crash,
    Events,
    Tripwire,
    admin_states,
    dies_at_admin_write,
    lb_body,
    make_policy,
    record,
    run,
    run_and_kill,
    set_behind_a_load_balancer,
    upgrade_args,
    world_behind_a_load_balancer,
)
from vmssctl import upgrade
from vmssctl.emulator.faults import FaultRule
from vmssctl.emulator.inprocess import WorldClock, WorldGateway, world_network
from vmssctl.emulator.resources import availability
from vmssctl.emulator.world import World
from vmssctl.errors import Forbidden, UsageError
from vmssctl.model import ImageRef, Instance
from vmssctl.rollout.engine import EXIT_FAILED, EXIT_OK
from vmssctl.rollout.gates import BAD, GOOD, WAIT, Verdict
from vmssctl.rollout.journal import Batch, Journal
from vmssctl.rollout.strategies.drain import (
    DRAIN,
    HOOK,
    HOOK_DRAINED,
    HOOK_READMITTED,
    ISSUED,
    READMITTED,
    RETIREES,
    before_retiring,
    serving,
    step,
)
from vmssctl.rollout.turn import Observation
from vmssctl.target import ImageChange


@pytest.fixture
def world() -> World:
    return world_behind_a_load_balancer(6, seed=3)


def users(world: World) -> str:
    return world.traffic.start({"resourceGroup": "rg", "loadBalancer": "lb", "rule": "web", "rps": 60,
                                "meanDurationSeconds": 0.2}).id


def rollout(world: World, journal: Journal, gateway=None, **policy) -> tuple[int, Events]:
    api = gateway or WorldGateway(world, "rg", "web")
    sink = Events()
    prepared = upgrade.prepare(api, journal, CONN, ImageChange(version=NEW),
                               make_policy(**{"max_unavailable": "2", **policy}))
    return upgrade.start(api, journal, CONN, prepared, [sink], WorldClock(world)), sink


def report(world: World, tid: str) -> dict:
    world.advance()
    return world.loads[tid].report()


def admin_down(world: World) -> list[str]:
    model = WorldGateway(world, "rg", "web").get()
    return [b.instance_id for b in world_network(world).backends(model) if b.admin == "Down"]


def test_drained_batches_fail_no_request_and_undrained_ones_do(world, tmp_path):
    tid = users(world)
    code, sink = rollout(world, Journal(tmp_path / "a.db"), drain="lb", drain_timeout=15)
    assert code == EXIT_OK, sink.events[-3:]
    drained = report(world, tid)
    assert drained["failed"] == 0 and drained["served"] > 0, drained
    batches = len(sink.of("batch_started"))
    assert len(sink.of("drained")) == len(sink.of("readmitted")) == batches > 1 and admin_down(world) == []
    ss = world.scale_sets.get("rg", "web")
    assert {i.upgrades for i in ss.instances.values()} == {1}
    # the same rollout back to the old image without a drain: requests are lost to stops and the probe's lag
    world.traffic.stop(tid)
    tid = users(world)
    undrained = upgrade.prepare(WorldGateway(world, "rg", "web"), Journal(tmp_path / "b.db"), CONN,
                                ImageChange(version="24.04.202610010"), make_policy(max_unavailable="2", drain="none"))
    assert upgrade.start(WorldGateway(world, "rg", "web"), Journal(tmp_path / "b.db"), CONN, undrained, [Events()],
                         WorldClock(world)) == EXIT_OK
    lost = report(world, tid)
    assert lost["failedBy"]["probe-lag"] > 0 and lost["failedBy"]["cut"] > 0, lost


@pytest.mark.parametrize("nth", [1, 2, 3, 4])
def test_a_crash_at_each_drain_step_resumes_with_nothing_left_down(world, tmp_path, nth):
    """set_admin calls: 1 drains the first batch, 2 readmits it, 3 drains the second, 4 readmits it."""
    tid = users(world)
    journal = Journal(tmp_path / "j.db")
    dead = [False]
    gateway = dies_at_admin_write(world, nth, dead)
    with pytest.raises(Crash):
        rollout(world, Tripwire(journal, "-", 0, dead), Tripwire(gateway, "-", 0, dead), drain="lb",
                drain_timeout=15)
    code, sink = rollout(world, journal, drain="lb", drain_timeout=15)
    assert code == EXIT_OK, sink.events[-3:]
    assert admin_down(world) == []
    assert {i.upgrades for i in world.scale_sets.get("rg", "web").instances.values()} == {1}
    assert report(world, tid)["failedBy"]["probe-lag"] == 0


def test_a_failing_batch_readmits_what_it_drained(world, tmp_path):
    world.faults.rules.append(FaultRule(match={"version": NEW}, effect="unhealthy"))
    code, sink = rollout(world, Journal(tmp_path / "j.db"), drain="lb", drain_timeout=15,
                         health_timeout=300)
    assert code == EXIT_FAILED
    assert admin_down(world) == [] and sink.of("readmitted")
    ss = world.scale_sets.get("rg", "web")
    bad = sink.of("batch_failed")[0]["instances"]  # only the first batch was upgraded (and went bad)
    assert sum(1 for i in ss.instances.values() if availability.healthy(ss, i)) == 6 - len(bad)


@pytest.mark.parametrize("policy, message", [
    ({"drain": "nlb"}, "--drain 'nlb'"),
    ({"drain": "lb", "strategy": "azure-rolling"}, "in-place and surge"),
    ({"drain": "lb", "drain_timeout": 7200}, "--drain-timeout"),
])
def test_bad_drain_settings_are_refused(policy, message):
    with pytest.raises(UsageError, match=message):
        make_policy(**policy)


def _batch(**meta) -> Batch:
    return Batch("r-1", 1, "forward", ["0", "1"], "issued", 100.0, None, [], meta)


UP, DOWN_ADMIN = {"up": True, "admin": "None"}, {"up": False, "admin": "Down"}
G, B, W = Verdict(GOOD), Verdict(BAD, "unhealthy"), Verdict(WAIT)


@pytest.mark.parametrize("meta, lb, verdicts, now, expected", [
    ({DRAIN: 100.0}, {"0": UP, "1": DOWN_ADMIN}, {}, 101.0, ("SetAdmin", ("0",), "Down")),
    ({DRAIN: 100.0}, {"0": DOWN_ADMIN, "1": DOWN_ADMIN}, {}, 110.0, ("Wait", 20.0)),
    ({DRAIN: 100.0}, {"0": DOWN_ADMIN, "1": DOWN_ADMIN}, {}, 130.0, ("IssueDrained",)),
    ({DRAIN: 100.0}, {}, {}, 130.0, ("IssueDrained",)),  # (a VM in no pool: nothing to drain)
    ({DRAIN: 100.0, ISSUED: 130.0}, {"0": DOWN_ADMIN, "1": DOWN_ADMIN}, {"0": G, "1": W}, 200.0, None),
    ({DRAIN: 100.0, ISSUED: 130.0}, {"0": DOWN_ADMIN, "1": DOWN_ADMIN}, {"0": G}, 200.0, None),
    ({DRAIN: 100.0, ISSUED: 130.0}, {"0": DOWN_ADMIN, "1": DOWN_ADMIN}, {"0": G, "1": B}, 200.0, ("Readmit",)),
    ({DRAIN: 100.0, ISSUED: 130.0, READMITTED: 200.0}, {"0": DOWN_ADMIN, "1": UP}, {"0": G, "1": G}, 201.0,
     ("SetAdmin", ("0",), "None")),
    ({DRAIN: 100.0, ISSUED: 130.0, READMITTED: 200.0}, {"0": {"up": False, "admin": "None"}, "1": UP},
     {"0": G, "1": G}, 201.0, ("Wait", 5.0)),
    ({DRAIN: 100.0, ISSUED: 130.0, READMITTED: 200.0}, {"0": {"up": False, "admin": "None"}, "1": UP},
     {"0": G, "1": G}, 900.0, None),  # not Up after the health timeout: judged as it stands
    ({DRAIN: 100.0, ISSUED: 130.0, READMITTED: 200.0}, {"0": UP, "1": {"up": False, "admin": "None"}},
     {"0": G, "1": B}, 201.0, None),  # a bad VM is not waited for: judged
    ({}, {"0": UP}, {"0": G, "1": G}, 201.0, None),  # not a drained batch
])
def test_drain_phases(meta, lb, verdicts, now, expected):
    policy = make_policy(drain="lb", drain_timeout=30, health_timeout=600)
    obs = Observation(now, (), verdicts=verdicts, seen={"lb": lb})
    action = step(obs, policy, _batch(**meta))
    if expected is None:
        assert action is None
        return
    assert type(action).__name__ == expected[0]
    if expected[0] == "SetAdmin":
        assert (action.ids, action.state) == expected[1:]
    if expected[0] == "Wait":
        assert action.seconds == expected[1]


def test_a_surge_retires_old_vms_only_once_the_new_ones_are_up_and_drains_them_first(world, tmp_path):
    tid = users(world)
    before = {str(i) for i in world.scale_sets.get("rg", "web").instances}
    code, sink = rollout(world, Journal(tmp_path / "j.db"), strategy="surge", max_surge="2", max_unavailable=None,
                         drain="lb", drain_timeout=15)
    assert code == EXIT_OK, sink.events[-3:]
    assert report(world, tid)["failed"] == 0
    retired = [i for e in sink.of("retiring") for i in e["instances"]]
    assert sorted(retired) == sorted(before) and len(sink.of("drained")) == len(sink.of("retiring")) == 3
    assert [i for e in sink.of("drained") for i in e["instances"]] == retired  # each drained, then deleted
    ss = world.scale_sets.get("rg", "web")
    assert len(ss.instances) == 6 and not before & {str(i) for i in ss.instances} and admin_down(world) == []


@pytest.mark.parametrize("nth", [1, 2])
def test_a_crash_while_a_surge_drains_resumes_without_deleting_twice(world, tmp_path, nth):
    tid = users(world)
    journal, dead = Journal(tmp_path / "j.db"), [False]
    gateway = dies_at_admin_write(world, nth, dead)
    settings = {"strategy": "surge", "max_surge": "3", "max_unavailable": None, "drain": "lb", "drain_timeout": 15}
    with pytest.raises(Crash):
        rollout(world, Tripwire(journal, "-", 0, dead), Tripwire(gateway, "-", 0, dead), **settings)
    code, sink = rollout(world, journal, **settings)
    assert code == EXIT_OK, sink.events[-3:]
    ss = world.scale_sets.get("rg", "web")
    assert len(ss.instances) == 6 and admin_down(world) == [] and report(world, tid)["failedBy"]["probe-lag"] == 0


def _instance(iid: str, healthy: bool = True) -> Instance:
    return Instance(iid, 0, 0, None, "running", "succeeded", None if healthy else "unhealthy", True,
                    ImageRef(publisher="p", offer="o", sku="s", version="1.0.0"))


@pytest.mark.parametrize("lb, healthy, counts", [
    ({}, True, True),  # in no pool: its health alone
    ({"0": UP}, True, True),
    ({"0": UP}, False, False),
    ({"0": {"up": False, "admin": "None"}}, True, False),  # the probe has not seen it Up (yet)
    ({"0": {"up": True, "admin": "Down"}}, True, False),  # drained: no new connections
])
def test_an_instance_serves_only_when_the_load_balancer_sends_it_new_connections(lb, healthy, counts):
    assert serving(Observation(0.0, (), seen={"lb": lb}))(_instance("0", healthy)) is counts


def _surge_batch(**meta) -> Batch:
    return Batch("r-1", 1, "forward", [], "issued", 100.0, None, [], {"surge": 2, "base": 4, "watermark": 3, **meta})


NEW_UP = {"4": UP, "5": UP, "0": UP, "1": UP}
NEW_NOT_UP = {**NEW_UP, "5": {"up": False, "admin": "None"}}


@pytest.mark.parametrize("meta, lb, now, elapsed, expected", [
    ({}, NEW_NOT_UP, 200.0, 100.0, ("Wait", 5.0)),  # the new VMs count only once the load balancers see them Up
    ({}, NEW_NOT_UP, 800.0, 700.0, ("DropAdded",)),  # never Up within the health timeout: they failed
    ({}, NEW_UP, 200.0, 100.0, ("DrainRetirees", ("0", "1"))),
    ({}, {"4": UP, "5": UP}, 200.0, 100.0, ("Retire", ("0", "1"))),  # the old ones in no pool: nothing to drain
    ({DRAIN: 200.0, RETIREES: ["0", "1"]}, {**NEW_UP, "1": {"up": True, "admin": "None"}}, 201.0, 101.0,
     ("SetAdmin", ("0", "1"), "Down")),
    ({DRAIN: 200.0, RETIREES: ["0", "1"]}, {**NEW_UP, "0": DOWN_ADMIN, "1": DOWN_ADMIN}, 210.0, 110.0,
     ("Wait", 20.0)),
    ({DRAIN: 200.0, RETIREES: ["0", "1"]}, {**NEW_UP, "0": DOWN_ADMIN, "1": DOWN_ADMIN}, 230.0, 130.0,
     ("Retire", ("0", "1"))),
])
def test_surge_drain_phases(meta, lb, now, elapsed, expected):
    policy = make_policy(strategy="surge", drain="lb", drain_timeout=30, health_timeout=600)
    instances = tuple(_instance(i) for i in ("0", "1", "2", "3", "4", "5"))
    obs = Observation(now, instances, elapsed=elapsed, seen={"lb": lb})
    action = before_retiring(obs, policy, _surge_batch(**meta), ["4", "5"], lambda: ["0", "1"])
    assert type(action).__name__ == expected[0]
    if expected[0] in ("SetAdmin", "DrainRetirees", "Retire"):
        assert action.ids == expected[1]
    if expected[0] == "Wait":
        assert action.seconds == expected[1]


def test_vmssctl_upgrade_drains_over_https_and_no_request_fails(frozen, up):
    """The CLI against the emulator: the SDK's pool writes set and clear admin state (by address name: the NIC
    reference is read-only on the wire), the users' requests all served."""
    rg, net = set_behind_a_load_balancer(frozen, 4)
    tid = frozen.admin("POST", "traffic", {"resourceGroup": rg, "loadBalancer": "lb", "rule": "web", "rps": 40})["id"]
    code, events, err = up(rg, "--version", NEW, "--drain", "lb", "--drain-timeout", "15s", "--max-unavailable", "2")
    assert code == 0, err
    kinds = [e["type"] for e in events]
    assert kinds.count("drained") == kinds.count("readmitted") == kinds.count("batch_started") >= 2
    row = next(x for x in frozen.admin("GET", "stats")["traffic"] if x["id"] == tid)
    assert row["failed"] == 0 and row["served"] > 0, row
    assert admin_states(frozen, rg, net) == {"None"}
    frozen.admin("POST", f"traffic/{tid}/stop")


@pytest.mark.parametrize("kill_at", ["drained", "readmitted"])
def test_a_kill_9_at_a_drain_step_and_the_run_again_leave_nothing_down(frozen, tmp_path, kill_at):
    rg, net = set_behind_a_load_balancer(frozen, 4)
    t0 = frozen.now()
    args = upgrade_args(frozen, rg, tmp_path / "journal.sqlite", "--version", NEW, "--drain", "lb",
                        "--drain-timeout", "15s", "--max-unavailable", "2")
    run_and_kill(args, kill_at)
    code, events, err = run(args)  # running it again resumes the rollout
    assert code == 0 and events[-1]["type"] == "rollout_succeeded", err
    assert admin_states(frozen, rg, net) == {"None"}
    assert record(frozen, rg, t0)["upgrades"] == {str(i): 1 for i in range(4)}


@pytest.mark.parametrize("denied", ["Microsoft.Network/loadBalancers/backendAddressPools/write",
                                    "Microsoft.Network/loadBalancers/read"])
def test_a_load_balancer_vmssctl_may_not_drain_is_one_line_before_anything_changes(frozen, up, denied):
    """Asked of the permissions API before anything is written; --drain none is the explicit way on."""
    rg, _ = set_behind_a_load_balancer(frozen, 2)
    frozen.admin("PUT", "permissions", {"deny": [denied]})
    try:
        code, events, err = up(rg, "--version", NEW)
        assert code == 2 and events == [], err
        line = err.strip().splitlines()
        assert len(line) == 1 and denied in line[0] and f"on {rg}/lb" in line[0] and "--drain none" in line[0]
        sdk = frozen.client().virtual_machine_scale_sets.get(rg, "web")
        assert sdk.virtual_machine_profile.storage_profile.image_reference.version != NEW  # nothing changed
        code, events, err = up(rg, "--version", NEW, "--drain", "none", "--max-unavailable", "1")
        assert code == 0 and events[-1]["type"] == "rollout_succeeded", err
    finally:
        frozen.admin("PUT", "permissions", {"deny": []})


class _Revoked:
    """The load balancers' write permission taken away after the plan asked: every admin-state write refused."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, attr: str):
        return getattr(self.inner, attr)

    def set_admin(self, model, ids, state) -> None:
        raise Forbidden("The client 'x' with object id 'x' does not have authorization to perform action "
                        "'Microsoft.Network/loadBalancers/backendAddressPools/write' over scope '/s'")


def test_a_permission_taken_away_mid_rollout_fails_it_before_any_vm_is_disrupted(world, tmp_path):
    net = _Revoked(world_network(world))
    gateway = WorldGateway(world, "rg", "web")
    gateway.network = lambda: net  # type: ignore[method-assign]
    code, sink = rollout(world, Journal(tmp_path / "j.db"), gateway, drain="lb", rollback="manual")
    assert code == EXIT_FAILED
    error = sink.of("rollout_failed")[0]["error"]
    assert "refused to drain" in error and "backendAddressPools/write" in error, error
    assert {i.upgrades for i in world.scale_sets.get("rg", "web").instances.values()} == {0}
    assert admin_down(world) == []


class _SomeoneElse:
    """Once the first batch is drained, another hand rewrites the load balancer: its rule loses the probe."""

    def __init__(self, world: World) -> None:
        self.world, self.inner, self.done = world, world_network(world), False

    def __getattr__(self, attr: str):
        return getattr(self.inner, attr)

    def set_admin(self, model, ids, state) -> None:
        self.inner.set_admin(model, ids, state)
        if state == "Down" and not self.done:
            self.done = True
            self.world.load_balancers.put("rg", "lb", lb_body("rg", probe=False))


@pytest.mark.parametrize("strategy", ["in-place", "surge"])
def test_a_load_balancer_changed_by_someone_else_mid_drain_stops_the_rollout_with_what_changed(world, tmp_path,
                                                                                               strategy):
    net = _SomeoneElse(world)
    gateway = WorldGateway(world, "rg", "web")
    gateway.network = lambda: net  # type: ignore[method-assign]
    before = {str(i) for i in world.scale_sets.get("rg", "web").instances}
    settings = {"max_surge": "2", "max_unavailable": None} if strategy == "surge" else {}
    code, sink = rollout(world, Journal(tmp_path / "j.db"), gateway, strategy=strategy, drain="lb", **settings)
    assert code == EXIT_FAILED
    error = sink.of("rollout_failed")[0]["error"]
    assert "changed during the rollout" in error and "gone: rg/lb rule web (pool pool, probe http)" in error, error
    assert "new: rg/lb rule web (pool pool, probe none)" in error
    ss = world.scale_sets.get("rg", "web")
    assert admin_down(world) == [] and before <= {str(i) for i in ss.instances}  # nothing retired
    assert {ss.instances[int(i)].upgrades for i in before} == {0}  # nothing upgraded


def test_the_emulator_refuses_a_denied_action_as_arm_does(frozen):
    from azure.core.exceptions import HttpResponseError

    rg, net = set_behind_a_load_balancer(frozen, 1)
    frozen.admin("PUT", "permissions", {"deny": ["Microsoft.Network/loadBalancers/backendAddressPools/*"]})
    try:
        with pytest.raises(HttpResponseError) as refused:
            net.load_balancer_backend_address_pools.get(rg, "lb", "pool")
        assert refused.value.status_code == 403 and refused.value.error.code == "AuthorizationFailed"
        assert "'Microsoft.Network/loadBalancers/backendAddressPools/read' over scope '/subscriptions/" in \
            refused.value.message
        assert net.load_balancers.get(rg, "lb").name == "lb"  # what is not denied is answered
        with frozen.http() as h:  # a malformed action is refused whole, the denied ones left as they were
            r = h.request("PUT", "/_emulator/permissions", json={"deny": ["not an action"]})
        assert r.status_code == 400 and "is not an action" in r.json()["error"]["message"]
        assert frozen.admin("GET", "permissions")["deny"] == ["Microsoft.Network/loadBalancers/backendAddressPools/*"]
    finally:
        frozen.admin("PUT", "permissions", {"deny": []})


def _hook(tmp_path, fail_on: str = "") -> str:
    """A drain hook that writes down what it was asked (and refuses ``fail_on``)."""
    log = tmp_path / "hook.log"
    return (f'if [ "$VMSSCTL_DRAIN" = "{fail_on}" ]; then echo "the app says no" >&2; exit 3; fi; '
            f'echo "$VMSSCTL_DRAIN $VMSSCTL_INSTANCES $VMSSCTL_RESOURCE_GROUP/$VMSSCTL_NAME" >> {log}')


def _asked(tmp_path) -> list[str]:
    return (tmp_path / "hook.log").read_text().splitlines()


def test_a_drain_hook_takes_each_batch_out_before_it_is_upgraded_and_back_once_good(world, tmp_path):
    code, sink = rollout(world, Journal(tmp_path / "j.db"), drain="hook", drain_hook=_hook(tmp_path),
                         drain_timeout=15)
    assert code == EXIT_OK, sink.events[-3:]
    batches = [e["instances"] for e in sink.of("batch_started")]
    assert _asked(tmp_path) == [line for ids in batches for line in (f"drain {','.join(ids)} rg/web",
                                                                      f"readmit {','.join(ids)} rg/web")]
    assert {e.get("by") for e in sink.of("drained") + sink.of("readmitted")} == {"hook"}
    assert {i.upgrades for i in world.scale_sets.get("rg", "web").instances.values()} == {1}


def test_a_surge_drains_its_retirees_through_the_hook(world, tmp_path):
    code, sink = rollout(world, Journal(tmp_path / "j.db"), strategy="surge", max_surge="3", max_unavailable=None,
                         drain="hook", drain_hook=_hook(tmp_path), drain_timeout=15)
    assert code == EXIT_OK, sink.events[-3:]
    retired = [e["instances"] for e in sink.of("retiring")]
    assert _asked(tmp_path) == [f"drain {','.join(ids)} rg/web" for ids in retired] and len(retired) == 2


def test_a_drain_hook_that_refuses_stops_the_rollout_before_anything_is_upgraded(world, tmp_path):
    code, sink = rollout(world, Journal(tmp_path / "j.db"), drain="hook", drain_hook=_hook(tmp_path, "drain"),
                         rollback="manual")
    assert code == EXIT_FAILED
    error = sink.of("rollout_failed")[0]["error"]
    assert error.startswith("the drain hook could not drain instance(s) 0: exited 3: the app says no"), error
    assert {i.upgrades for i in world.scale_sets.get("rg", "web").instances.values()} == {0}


HOOK_PHASES = [
    ({DRAIN: 100.0, HOOK: "x"}, {}, 101.0, ("RunHook", "drain")),
    ({DRAIN: 100.0, HOOK: "x", HOOK_DRAINED: 101.0}, {}, 110.0, ("Wait",)),  # the drain timeout, from the record
    ({DRAIN: 100.0, HOOK: "x", HOOK_DRAINED: 101.0}, {}, 130.0, ("IssueDrained",)),
    ({DRAIN: 100.0, HOOK: "x", HOOK_DRAINED: 101.0, ISSUED: 130.0}, {"0": G, "1": W}, 200.0, None),
    ({DRAIN: 100.0, HOOK: "x", HOOK_DRAINED: 101.0, ISSUED: 130.0}, {"0": G, "1": G}, 200.0, ("Readmit",)),
    # a crash after the readmission was recorded, before the hook said it was done: asked again
    ({DRAIN: 100.0, HOOK: "x", HOOK_DRAINED: 101.0, ISSUED: 130.0, READMITTED: 200.0}, {"0": G, "1": G}, 201.0,
     ("RunHook", "readmit")),
    ({DRAIN: 100.0, HOOK: "x", HOOK_DRAINED: 101.0, ISSUED: 130.0, READMITTED: 200.0, HOOK_READMITTED: 200.0},
     {"0": G, "1": G}, 201.0, None),
    # the hook put them back: they count once what stands in front (a gateway, say) sees them Up
    ({DRAIN: 100.0, HOOK: "x", HOOK_DRAINED: 101.0, ISSUED: 130.0, READMITTED: 200.0, HOOK_READMITTED: 200.0},
     {"0": G, "1": G}, 201.0, ("Wait",), {"0": {"up": False, "admin": "None", "drains": False}, "1": UP}),
]


@pytest.mark.parametrize("meta, verdicts, now, expected, lb", [(*r, None) if len(r) == 4 else r for r in HOOK_PHASES])
def test_drain_hook_phases(meta, verdicts, now, expected, lb):
    policy = make_policy(drain="hook", drain_hook="x", drain_timeout=30)
    action = step(Observation(now, (), verdicts=verdicts, seen={"lb": lb or {}}), policy, _batch(**meta))
    if expected is None:
        assert action is None
        return
    assert type(action).__name__ == expected[0]
    if expected[0] == "RunHook":
        assert action.op == expected[1] and action.ids == ("0", "1")


@pytest.mark.parametrize("policy, message", [
    ({"drain": "hook"}, "--drain hook needs --drain-hook CMD"),
    ({"drain": "lb", "drain_hook": "x"}, "--drain-hook applies to --drain hook"),
    ({"drain": "hook", "drain_hook": "x", "strategy": "azure-rolling"}, "--drain hook applies to --strategy"),
])
def test_bad_drain_hook_settings_are_refused(policy, message):
    with pytest.raises(UsageError, match=message):
        make_policy(**policy)


@pytest.mark.parametrize("meta, state, settled, needed, health", [
    (None, None, True, True, True),  # between batches: the floor counts what the load balancers serve
    ({DRAIN: 1.0}, "issuing", False, True, False),  # draining: admin states only (one GET, no health LRO)
    ({DRAIN: 1.0, ISSUED: 2.0}, "issued", False, False, False),  # upgrading: nothing depends on it
    ({DRAIN: 1.0, ISSUED: 2.0}, "issued", True, True, False),  # verdicts in: readmit
    ({DRAIN: 1.0, ISSUED: 2.0, READMITTED: 3.0}, "issued", True, True, True),  # Up again?
    ({"surge": 2}, "issued", False, False, True),  # a surge's new VMs coming up
    ({"surge": 2}, "issued", True, True, True),  # judged: are they Up?
    ({"surge": 2, DRAIN: 1.0, RETIREES: ["0"]}, "issued", True, True, False),  # its retirees draining
    ({"surge": 2, DRAIN: 1.0, RETIREES: ["0"]}, "retiring", True, False, False),  # being deleted
    ({DRAIN: 1.0, HOOK: "x"}, "issuing", False, False, False),  # a hook drains: nothing to read meanwhile
    ({DRAIN: 1.0, HOOK: "x", ISSUED: 2.0, READMITTED: 3.0}, "issued", True, True, True),  # back: Up in front?
])
def test_the_load_balancers_are_read_only_when_a_decision_needs_them(meta, state, settled, needed, health):
    from vmssctl.rollout.strategies.drain import _health_needed, _needed

    batch = None if meta is None else Batch("r-1", 1, "forward", ["0"], state, 1.0, None, [], meta)
    assert _needed(batch, settled) is needed
    assert _health_needed(batch) is health


@pytest.mark.parametrize("probe, drain", [(True, "lb"), (False, "none")])
def test_auto_drains_a_set_behind_a_probed_rule_and_the_plan_shows_what_is_in_front(tmp_path, probe, drain):
    from rich.text import Text

    from vmssctl.render import plan_lines

    world = world_behind_a_load_balancer(4, seed=2)
    if not probe:
        world.load_balancers.put("rg", "lb", lb_body("rg", probe=False))
    prepared = upgrade.prepare(WorldGateway(world, "rg", "web"), Journal(tmp_path / "j.db"), CONN,
                               ImageChange(version=NEW), make_policy(max_unavailable="1"))
    assert prepared.policy.drain == drain
    lines = [Text.from_markup(line).plain for line in plan_lines(prepared)]
    assert f"  behind rg/lb rule web (probe {'http' if probe else 'none'}): 4 Up, 0 Down" in lines, lines
    assert prepared.to_json()["loadBalancing"][0]["up"] == 4
    assert any(line.startswith("  drain: each batch out of") for line in lines) is probe


def test_a_drain_hook_on_a_set_behind_an_application_gateway_counts_vms_once_the_gateway_sees_them(tmp_path):
    """What an operator with a gateway does today: the hook takes VMs out of its pool and puts them back; vmssctl
    reads the gateway's backend health to know when they count again."""
    from tests.helpers import gw_body, in_pool

    world = world_behind_a_load_balancer(1, seed=5)
    world.app_gateways.put("rg", "gw", gw_body("rg"))
    world.scale_sets.put("rg", "front", in_pool(4, "rg", gateway=True))
    world.clock.advance(900)
    gateway = WorldGateway(world, "rg", "front")
    health: list[float] = []
    real = world.app_gateways.backend_health
    world.app_gateways.backend_health = lambda gw: (health.append(world.now()), real(gw))[1]  # type: ignore
    sink = Events()
    prepared = upgrade.prepare(gateway, Journal(tmp_path / "j.db"), CONN, ImageChange(version=NEW),
                               make_policy(max_unavailable="2", drain="hook", drain_hook=_hook(tmp_path)))
    assert [b.gateway for b in prepared.backends or []] == [True] * 4
    assert upgrade.start(gateway, Journal(tmp_path / "j.db"), CONN, prepared, [sink], WorldClock(world)) == EXIT_OK
    readmits = [e["time"] for e in sink.of("readmitted")]
    judged = [e["time"] for e in sink.of("batch_succeeded")]
    assert len(readmits) == len(judged) >= 2
    # each batch is judged only after the gateway was asked about its VMs once they were back
    assert all(any(r <= h <= j for h in health) for r, j in zip(readmits, judged, strict=True))
    assert _asked(tmp_path)[0].endswith("rg/front")


def test_when_the_permissions_api_cannot_answer_nothing_is_called_refused():
    """Unknown is not refused: what is missing then shows at the first read or write, before a batch is disrupted."""
    from types import SimpleNamespace

    from azure.core.exceptions import HttpResponseError

    from vmssctl.azure import NetworkApi

    def refuse(*args, **kwargs):
        raise HttpResponseError(message="The client does not have authorization to perform action "
                                        "'Microsoft.Authorization/permissions/read'")

    api = NetworkApi(None, SimpleNamespace(permissions=SimpleNamespace(list_for_resource=refuse)))
    model = WorldGateway(world_behind_a_load_balancer(1), "rg", "web").get()
    assert api.refused(model, ("Microsoft.Network/loadBalancers/read",)) == []


def _gateway_world(n: int = 6, flexible: bool = False):
    from tests.helpers import gw_body, in_pool

    world = world_behind_a_load_balancer(1, seed=7)
    world.app_gateways.put("rg", "gw", gw_body("rg"))
    world.scale_sets.put("rg", "front", in_pool(n, "rg", gateway=True, flexible=flexible))
    world.clock.advance(900)
    world.advance()
    return world


def _in_gateway(world) -> set[str]:
    gw = world.app_gateways.get("rg", "gw")
    return {str(m.inst.instance_id) for m in world.app_gateways.members(gw, "pool")}


@pytest.mark.parametrize("strategy", ["in-place", "surge"])
def test_drain_appgw_takes_vms_out_of_the_gateway_pool_before_they_are_disrupted(tmp_path, strategy):
    """Each VM leaves the gateway's pool (its own network configuration) before it is upgraded or deleted; an
    upgrade to the latest model puts it back, and the batch counts once the gateway sees it Healthy."""
    world = _gateway_world()
    disrupted: list[tuple[str, bool]] = []  # (instance, still in the gateway's pool when disrupted)
    act = world.vms.act

    def watching(rg, name, action, ids):
        if action in ("manualupgrade", "delete") and name == "front":
            members = _in_gateway(world)
            disrupted.extend((str(i), str(i) in members) for i in ids or [])
        return act(rg, name, action, ids)
    world.vms.act = watching  # type: ignore[method-assign]
    gateway, sink = WorldGateway(world, "rg", "front"), Events()
    settings = {"max_surge": "2", "max_unavailable": None} if strategy == "surge" else {"max_unavailable": "2"}
    prepared = upgrade.prepare(gateway, Journal(tmp_path / "j.db"), CONN, ImageChange(version=NEW),
                               make_policy(strategy=strategy, drain="appgw", drain_timeout=20, **settings))
    assert upgrade.start(gateway, Journal(tmp_path / "j.db"), CONN, prepared, [sink], WorldClock(world)) == EXIT_OK
    assert disrupted and not any(still for _, still in disrupted), disrupted
    assert {e.get("by") for e in sink.of("drained")} == {"appgw"}
    ss = world.scale_sets.get("rg", "front")
    assert _in_gateway(world) == {str(i) for i in ss.instances} and len(ss.instances) == 6


def test_a_failing_batch_drained_from_the_gateway_is_put_back(tmp_path):
    world = _gateway_world(4)
    world.faults.rules.append(FaultRule(match={"version": NEW}, effect="fail"))
    gateway, sink = WorldGateway(world, "rg", "front"), Events()
    prepared = upgrade.prepare(gateway, Journal(tmp_path / "j.db"), CONN, ImageChange(version=NEW),
                               make_policy(max_unavailable="2", drain="appgw", drain_timeout=20, rollback="manual",
                                           health_timeout=300))
    assert upgrade.start(gateway, Journal(tmp_path / "j.db"), CONN, prepared, [sink], WorldClock(world)) == \
        EXIT_FAILED
    assert _in_gateway(world) == {"0", "1", "2", "3"}  # nobody left out of the pool


@pytest.mark.parametrize("setup, name, message", [
    (lambda: world_behind_a_load_balancer(2), "web", "names no Application Gateway pool"),  # (a load balancer's)
    (lambda: _gateway_world(2, flexible=True), "front", "is Flexible"),
])
def test_drain_appgw_where_it_cannot_apply_is_one_line_before_anything_changes(tmp_path, setup, name, message):
    world = setup()
    with pytest.raises(UsageError, match=message):
        upgrade.prepare(WorldGateway(world, "rg", name), Journal(tmp_path / "j.db"), CONN,
                        ImageChange(version=NEW), make_policy(max_unavailable="1", drain="appgw"))


def test_vmssctl_upgrade_drains_through_an_application_gateway_over_https(frozen, up, tmp_path):
    """The SDK's per-VM network configuration writes (If-Match on each VM's etag) take VMs out and upgrades put
    them back; users' requests through the gateway meanwhile: none failed."""
    rg, net = set_behind_a_load_balancer(frozen, 4, gateway=True)
    tid = frozen.admin("POST", "traffic", {"resourceGroup": rg, "applicationGateway": "gw", "rule": "web",
                                           "rps": 40})["id"]
    policy = tmp_path / "policy.toml"  # users' requests through the gateway judge each batch
    policy.write_text(f'[[gates]]\nkind = "requests"\nsource = "emulator"\napplication_gateway = "{rg}/gw"\n'
                      'max_failed = "0%"\n')
    try:
        code, events, err = up(rg, "--version", NEW, "--drain", "appgw", "--drain-timeout", "15s",
                               "--max-unavailable", "2", "--policy", str(policy))
    finally:
        frozen.admin("POST", f"traffic/{tid}/stop")
    assert code == 0, (err, [e for e in events if e["type"] in ("batch_failed", "failed")])
    kinds = [e["type"] for e in events]
    assert kinds.count("drained") == kinds.count("batch_started") == kinds.count("measured") >= 2
    assert all(e["failed"] == 0 and e["requests"] > 0 for e in events if e["type"] == "measured")
    pool = net.application_gateways.get(rg, "gw").backend_address_pools[0]
    assert len(pool.backend_ip_configurations) == 4  # every VM back in the pool
    users = next(x for x in frozen.admin("GET", "stats")["traffic"] if x["id"] == tid)
    assert users["failed"] == 0 and users["served"] > 0, users
