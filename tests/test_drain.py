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
from vmssctl.errors import UsageError
from vmssctl.rollout.engine import EXIT_FAILED, EXIT_OK
from vmssctl.rollout.gates import BAD, GOOD, WAIT, Verdict
from vmssctl.rollout.journal import Batch, Journal
from vmssctl.rollout.strategies.drain import DRAIN, ISSUED, READMITTED, step
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
                               make_policy(max_unavailable="2", **policy))
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
                                ImageChange(version="24.04.202610010"), make_policy(max_unavailable="2"))
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
    net = Tripwire(world_network(world), "set_admin", nth, dead)
    gateway = WorldGateway(world, "rg", "web")
    gateway.network = lambda: net  # type: ignore[method-assign]
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
    ({"drain": "appgw"}, "--drain 'appgw'"),
    ({"drain": "lb", "strategy": "surge"}, "in-place"),
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
