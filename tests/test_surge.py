"""Surge: new VMs first, old ones retired after; the healthy count never drops below the starting capacity."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from tests.conftest import cli, start_emulator
from tests.helpers import NEW, OLD, instances, make_set, record, run, run_and_kill, upgrade_args


class Observer:
    """Polls the set through the SDK while a rollout runs: the lowest healthy count it ever saw."""

    def __init__(self, emu, rg: str) -> None:
        self.emu, self.rg, self.lowest, self.polls = emu, rg, None, 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.done.is_set():
            healthy = sum(i.healthy for i in instances(self.emu, self.rg))
            self.lowest = healthy if self.lowest is None else min(self.lowest, healthy)
            self.polls += 1

    def stop(self) -> int:
        self.done.set()
        self.thread.join(30)
        assert self.lowest is not None and self.polls > 3
        return self.lowest


def balanced(vms) -> bool:
    return max(Counter(i.fault_domain for i in vms).values()) - min(Counter(i.fault_domain for i in vms).values()) <= 1


def test_surge_never_drops_below_capacity_and_ends_balanced(frozen, up):
    rg = make_set(frozen, 20)
    t0 = frozen.now()
    observer = Observer(frozen, rg)
    code, events, err = up(rg, "--version", NEW, "--strategy", "surge", "--max-surge", "25%")
    lowest = observer.stop()
    assert code == 0, err
    vms = instances(frozen, rg)
    assert len(vms) == 20 and all(i.image.exact_version == NEW and i.healthy for i in vms)
    assert balanced(vms)
    assert lowest >= 20 and record(frozen, rg, t0)["minHealthy"] >= 20
    retired = [i for e in events if e["type"] == "retiring" for i in e["instances"]]
    assert sorted(retired, key=int) == [str(i) for i in range(20)]  # every old VM retired exactly once
    progress = [e for e in events if e["type"] == "progress"]
    assert {p["floor"] for p in progress} == {20} and {p["batches_total"] for p in progress} == {4}


@pytest.mark.parametrize("flags, batches", [
    (("--strategy", "surge", "--canary", "1", "--max-surge", "2"), 5),  # 1 + 2 + 2 + 2 + 1
    (("--strategy", "surge", "--max-surge", "3"), 3),
    (("--strategy", "in-place", "--canary", "1", "--batch-size", "3"), 4),
])
def test_every_progress_says_the_plans_batches_and_instances(frozen, up, flags, batches):
    """What the plan promised is what every view counts against, from the first turn on (a surge's batch in
    flight counts the VMs it will retire before it has chosen them)."""
    rg = make_set(frozen, 8)
    code, events, err = up(rg, "--version", NEW, *flags)
    assert code == 0, err
    plan = next(e for e in events if e["type"] == "plan")
    assert len(plan["plan"]["batches"]) == batches
    progress = [e for e in events if e["type"] == "progress"]
    assert {(p["batches_total"], p["total"]) for p in progress} == {(batches, 8)}
    assert [p["done"] for p in progress] == sorted(p["done"] for p in progress)  # never backwards


def test_a_bad_image_removes_the_surge_and_keeps_the_old_vms(frozen, up):
    rg = make_set(frozen, 8)
    t0 = frozen.now()
    with frozen.fault("unhealthy", version=NEW):
        code, events, err = up(rg, "--version", NEW, "--strategy", "surge", "--max-surge", "2")
    assert code == 1, err
    failed = next(e for e in events if e["type"] == "batch_failed")
    assert failed["removing"] and all(int(i) >= 8 for i in failed["removing"])
    frozen.admin("POST", "clock", {"advance": 120})
    vms = instances(frozen, rg)
    assert len(vms) == 8 and all(i.image.exact_version == OLD for i in vms)
    assert record(frozen, rg, t0)["minHealthy"] >= 8


# A real kill -9 between a surge's scale-out and its deletes; the other points are crashed in-process (test_engine)
@pytest.mark.parametrize("kill_at, nth", [("retiring", 3)])
def test_kill_between_scale_out_and_delete_resumes_cleanly(frozen, tmp_path, kill_at, nth):
    rg = make_set(frozen, 8)
    t0 = frozen.now()
    args = upgrade_args(frozen, rg, tmp_path / "journal.sqlite", "--version", NEW, "--strategy", "surge",
                        "--max-surge", "2")
    run_and_kill(args, kill_at, nth)
    code, _, err = run(args)
    assert code == 0, err
    vms = instances(frozen, rg)
    assert len(vms) == 8 and all(i.image.exact_version == NEW and i.healthy for i in vms)
    rec = record(frozen, rg, t0)
    assert rec["minHealthy"] >= 8
    assert rec["capacity"] == 8


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """An emulator of its own for the large sets, so the shared one stays small (and quick to save)."""
    e = start_emulator(tmp_path_factory.mktemp("big"), "--time-scale", "0", "--throttle", "off")
    yield e
    e.stop()


@pytest.fixture
def up_big(big, tmp_path, capsys):
    def run_up(rg: str, *flags: str):
        return cli(capsys, "upgrade", "-g", rg, "-n", "web", "--emulator", str(big.state_dir), "--journal",
                   str(tmp_path / "journal.sqlite"), "-o", "json", "--yes", *flags)
    return run_up


def test_a_refused_scale_out_stops_with_arms_reason(big, up_big):
    """A 1,000-VM set has no room to surge: ARM refuses the scale-out (as for quota or allocation failures)."""
    frozen, up = big, up_big
    rg = make_set(frozen, 1000)
    code, events, err = up(rg, "--version", NEW, "--strategy", "surge", "--max-surge", "10%")
    assert code == 1 and "refused the surge's scale-out" in events[-1]["error"], err
    assert not any(i.image.exact_version == NEW for i in instances(frozen, rg))
    # the fallback in place, and surges of 900 VMs, run in-process: tests/test_engine.py


def _protect(emu, rg: str, iid: str, **flags: bool) -> None:
    """Set a VM's protection policy with a VM PUT, as `az vmss update --protect-from-scale-in` does."""
    client = emu.client()
    vm = client.virtual_machine_scale_set_vms.get(rg, "web", iid)
    vm.properties["protectionPolicy"] = flags
    client.virtual_machine_scale_set_vms.begin_update(rg, "web", iid, vm, polling=False)  # frozen clock


@pytest.mark.parametrize("strategy", ["in-place", "surge"])
def test_protected_instances_are_left_alone_and_reported(frozen, up, strategy):
    rg = make_set(frozen, 6)
    _protect(frozen, rg, "1", protectFromScaleSetActions=True)
    _protect(frozen, rg, "2", protectFromScaleIn=True)
    code, events, err = up(rg, "--version", NEW, "--strategy", strategy, "--batch-size" if strategy == "in-place"
                           else "--max-surge", "2")
    assert code == 0, err
    left = {"in-place": ["1"], "surge": ["1", "2"]}[strategy]
    assert events[0]["type"] == "plan" and events[0]["protected"] == left
    by_id = {i.instance_id: i for i in instances(frozen, rg)}
    assert all(by_id[i].image.exact_version == OLD for i in left)  # still there, never touched
    assert all(i.image.exact_version == NEW for iid, i in by_id.items() if iid not in left)
    assert len(by_id) == 6


def test_a_surge_plan_says_what_a_surge_does(tmp_path):
    """'by batches of 4' with --max-surge 5 misled: the plan says it adds 5, then retires as many, chosen then."""
    from rich.text import Text

    from tests.helpers import CONN, make_policy, world_behind_a_load_balancer
    from vmssctl import upgrade
    from vmssctl.emulator.inprocess import WorldGateway
    from vmssctl.render import plan_lines
    from vmssctl.rollout.journal import Journal
    from vmssctl.target import ImageChange

    world = world_behind_a_load_balancer(20, seed=6)
    prepared = upgrade.prepare(WorldGateway(world, "rg", "web"), Journal(tmp_path / "j.db"), CONN,
                               ImageChange(version=NEW), make_policy(strategy="surge", max_surge="5"))
    text = "\n".join(Text.from_markup(line).plain for line in plan_lines(prepared))
    assert "policy: by surges of 5 (adds that many, then retires as many)" in text and "batches of" not in text
    assert "chosen then to keep zones, fault and update domains even" in text
