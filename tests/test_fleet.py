"""Fleets: the fleet file (tables of cases), and fleets of 12 sets in 2 subscriptions run on DBOS (SQLite)
against a running emulator.

The emulator's clock runs (2,400 simulated seconds a real one) because a stage's sets roll out in parallel:
each set's engine waits on the clock in its own thread.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tests.conftest import cli, fleet_emulator
from vmssctl.errors import UsageError
from vmssctl.fleet.spec import SetRef, assign, parse

NEW, OLD, BAD = "24.04.202611200", "24.04.202610010", "24.04.202612666"
SUB2 = "00000000-0000-0000-0000-00000000feee"  # the emulator's second subscription (--subscriptions 2)
# twelve sets in two subscriptions: (subscription index, resource group) -> set names
SETS = {(0, "fleet-a"): ["web"], (0, "fleet-b"): ["api", "jobs", "web"], (0, "fleet-e"): ["api", "web"],
        (1, "fleet-c"): ["api", "jobs", "web"], (1, "fleet-d"): ["api", "jobs", "web"]}


def fleet_file(version: str = NEW, bake: str = "10m", subscriptions: tuple[str, ...] = ()) -> str:
    subs = f"subscriptions = {list(subscriptions)!r}".replace("'", '"') if subscriptions else ""
    return f'''
name = "november"
[target]
version = "{version}"
[select]
resource_groups = ["fleet-*"]
{subs}
[policy]
batch_percent = 50
health_timeout = "2h"   # simulated: 3 real seconds at 2,400x (15 min was 0.375 s: a loaded machine's pause)
[[stages]]
name = "canary"
sets = ["fleet-a/web"]
bake = "{bake}"
[[stages]]
name = "pilot"
match = "fleet-b/*"
concurrency = 2
bake = "5m"
[[stages]]
name = "rest"
concurrency = 4
'''


REFS = [SetRef(rg, n, "eastus", {"env": "prod" if sub == 0 else "test"}, f"sub{sub}")
        for (sub, rg), ns in SETS.items() for n in ns]


# --------------------------------------------------------------------------------------------- the file
def test_stages_take_their_sets_in_order_and_the_last_takes_the_rest():
    plans = assign(parse(fleet_file()), REFS)
    assert [(p.stage.name, [r.short for r in p.sets]) for p in plans] == [
        ("canary", ["fleet-a/web"]), ("pilot", ["fleet-b/api", "fleet-b/jobs", "fleet-b/web"]),
        ("rest", ["fleet-e/api", "fleet-e/web", "fleet-c/api", "fleet-c/jobs", "fleet-c/web", "fleet-d/api",
                  "fleet-d/jobs", "fleet-d/web"])]
    tagged = parse(fleet_file().replace('resource_groups = ["fleet-*"]',
                                        'resource_groups = ["fleet-*"]\ntags = { env = "prod" }'))
    assert [len(p.sets) for p in assign(tagged, REFS)] == [1, 3, 2]


@pytest.mark.parametrize(("text", "needle"), [
    ("[target]\n", "[target] is required"),
    ('[target]\nversion = "1.2"\n', "Major.Minor.Build"),
    ('[target]\nversion = "1.2.3"\n[[stages]]\nconcurrency = 0\n', "concurrency"),
    ('[target]\nversion = "1.2.3"\n[[stages]]\nbake = "forever"\n', "bake"),
    ('[target]\nversion = "1.2.3"\n[[stages]]\nsets = ["nope"]\n', "resource-group/scale-set"),
    ('[target]\nversion = "1.2.3"\n[policy]\nbatch_size = -1\n', "batch"),
    ('[target]\nversion = "1.2.3"\n[halt]\nmax_failed = 1\nmax_failed_percent = 5\n', "not both"),
    ('what = 1\n[target]\nversion = "1.2.3"\n', "unknown setting"),
    ('[target]\nversion = "1.2.3"\nwhat = 1\n', "takes only"),
    ('target = [', "not valid TOML"),
])
def test_a_bad_fleet_file_is_one_clear_line(text, needle):
    with pytest.raises(UsageError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        parse(text)


def test_a_stage_naming_an_unknown_set_or_a_set_in_no_stage_is_refused():
    spec = parse('[target]\nversion = "1.2.3"\n[[stages]]\nsets = ["fleet-z/web"]\n')
    with pytest.raises(UsageError, match="not among the selected"):
        assign(spec, REFS)
    spec = parse('[target]\nversion = "1.2.3"\n[[stages]]\nsets = ["fleet-a/web"]\n')
    with pytest.raises(UsageError, match="in no stage"):
        assign(spec, REFS)


def test_the_same_group_and_name_in_two_subscriptions_are_two_sets():
    """In Azure a resource group and a scale set name can repeat across subscriptions: a fleet tells them apart by
    subscription (its keys, its events, the dashboard's links); a stage naming "rg/name" that means both is
    refused, "subscription/rg/name" names one, and a pattern takes both."""
    a, b = "00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"
    twins = [SetRef("prod", "web", "eastus", {}, a), SetRef("prod", "web", "eastus", {}, b)]
    both = assign(parse('[target]\nversion = "1.2.3"\n[[stages]]\nmatch = "prod/*"\n'), twins)
    assert [r.key for r in both[0].sets] == [f"{a}/prod/web", f"{b}/prod/web"]
    with pytest.raises(UsageError, match="in 2 of the fleet's subscriptions"):
        assign(parse('[target]\nversion = "1.2.3"\n[[stages]]\nsets = ["prod/web"]\n'), twins)
    one = assign(parse(f'[target]\nversion = "1.2.3"\n[[stages]]\nsets = ["{b}/prod/web"]\n[[stages]]\n'), twins)
    assert [[r.key for r in p.sets] for p in one] == [[f"{b}/prod/web"], [f"{a}/prod/web"]]


@pytest.mark.parametrize(("halt", "failed", "started", "halts"), [
    ("", 0, 3, False), ("", 1, 3, True), ("[halt]\nmax_failed = 1\n", 1, 3, False),
    ("[halt]\nmax_failed_percent = 50\n", 1, 2, False), ("[halt]\nmax_failed_percent = 50\n", 2, 3, True)])
def test_halt_rules(halt, failed, started, halts):
    assert parse(f'[target]\nversion = "1.2.3"\n{halt}').halts(failed, started) is halts


# ---------------------------------------------------------------------------------------- on the emulator
@pytest.fixture(scope="module")
def fleet_emu(tmp_path_factory):
    """The twelve sets in two subscriptions, on an emulator of their own."""
    e = fleet_emulator(tmp_path_factory.mktemp("fleet-emu"))
    make_fleet(e)
    yield e
    e.stop()


def make_fleet(emu) -> None:
    assert emu.info["subscriptions"][1] == SUB2
    emu.create_sets(SETS, 4)


def versions(emu) -> dict[str, set[str]]:
    from vmssctl.azure import ScaleSetApi

    by_sub = emu.clients()
    return {f"{rg}/{n}": {i.image.exact_version for i in ScaleSetApi(by_sub[sub], rg, n).instances()}
            for (sub, rg), ns in SETS.items() for n in ns}


def test_a_fleet_runs_its_stages_in_order_with_bake_then_a_bad_image_halts_and_rolls_back(fleet_emu, tmp_path,
                                                                                         capsys):
    emu = fleet_emu
    common = ["--emulator", str(emu.state_dir), "--journal", str(tmp_path / "journal.sqlite"), "-o", "json"]
    subs = tuple(emu.info["subscriptions"])
    (tmp_path / "fleet.toml").write_text(fleet_file(subscriptions=subs))
    code, events, err = cli(capsys, "fleet", "plan", str(tmp_path / "fleet.toml"), *common)
    assert code == 0, err
    assert [len(s["sets"]) for s in events[0]["stages"]] == [1, 3, 8]
    t0 = emu.now()
    code, events, err = cli(capsys, "fleet", "run", str(tmp_path / "fleet.toml"), "--yes", *common)
    assert code == 0, (err, [e for e in events if e["type"] in ("set_finished", "fleet_halted")
                             and e.get("state") != "succeeded"])
    kinds = [(e["type"], e.get("stage")) for e in events if e["type"].startswith(("stage_", "bake_"))]
    assert kinds == [("stage_started", "canary"), ("stage_finished", "canary"), ("bake_started", "canary"),
                     ("bake_finished", "canary"), ("stage_started", "pilot"), ("stage_finished", "pilot"),
                     ("bake_started", "pilot"), ("bake_finished", "pilot"), ("stage_started", "rest"),
                     ("stage_finished", "rest")]
    at = {(e["type"], e.get("stage")): e["time"] for e in events if "time" in e}
    assert at[("bake_finished", "canary")] - at[("bake_started", "canary")] >= 600
    assert at[("stage_started", "pilot")] >= at[("bake_finished", "canary")]
    finished = [e for e in events if e["type"] == "set_finished"]
    assert len(finished) == 12 and {e["state"] for e in finished} == {"succeeded"}
    assert events[-1]["type"] == "fleet_view" and events[-1]["state"] == "succeeded"
    assert events[-1]["counts"]["succeeded"] == 12
    assert all(v == {NEW} for v in versions(emu).values())
    stats = emu.stats(since=t0)["scaleSets"]
    assert all(set(stats[k]["upgrades"].values()) == {1} and stats[k]["minHealthy"] >= 2 for k in versions(emu))

    # a bad image: the canary stage fails, the fleet halts before the pilot, and rolls back
    emu.admin("PUT", "faults", {"rules": [{"match": {"version": BAD}, "effect": "unhealthy"}]})
    (tmp_path / "bad.toml").write_text(fleet_file(BAD, bake="1m", subscriptions=subs))
    code, events, err = cli(capsys, "fleet", "run", str(tmp_path / "bad.toml"), "--yes", *common)
    assert code == 1, err
    halted = next(e for e in events if e["type"] == "fleet_halted")
    assert halted["stage"] == "canary"
    assert not any(e["type"] == "stage_started" and e["stage"] == "pilot" for e in events)
    fid = events[0]["fleet"]
    code, events, err = cli(capsys, "fleet", "rollback", fid, "--yes", *common)
    assert code == 0, err
    assert events[-2]["type"] == "fleet_rolled_back" and events[-1]["state"] == "rolled back"
    emu.admin("POST", "clock", {"advance": 600})
    assert all(v == {NEW} for v in versions(emu).values())  # the canary is back; nothing else was touched
    code, events, err = cli(capsys, "fleet", "status", fid, "--events", *common)
    assert code == 0 and any(e["type"] == "fleet_halted" for e in events)
    assert events[-1]["state"] == "rolled back" and events[-1]["counts"]["rolled_back"] == 1
    emu.admin("PUT", "faults", {"rules": []})


def test_status_of_a_running_fleet_a_second_runner_refused_pause_resume_and_abort(fleet_emu, tmp_path, capsys):
    """While a fleet runs (SQLite, in its own process): `fleet status` shows it so far without running anything,
    a second `fleet run` of the database is refused, `fleet pause` holds it and `fleet resume` lets it go on,
    and `fleet abort` stops it before its next stage."""
    emu = fleet_emu
    (tmp_path / "fleet.toml").write_text(fleet_file("24.04.202612300", bake="6h",
                                                    subscriptions=tuple(emu.info["subscriptions"])))
    common = ["--emulator", str(emu.state_dir), "--journal", str(tmp_path / "journal.sqlite"), "-o", "json"]
    proc = subprocess.Popen([sys.executable, "-m", "vmssctl", "fleet", "run", str(tmp_path / "fleet.toml"), "--yes",
                             *common],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    fid = None
    for line in proc.stdout:
        event = json.loads(line)
        fid = fid or event.get("fleet")
        if event["type"] == "bake_started":  # the canary is done; the fleet bakes 6 simulated hours
            break
    assert fid, proc.stderr.read()[-2000:] if proc.poll() is not None else "no fleet id"
    code, events, err = cli(capsys, "fleet", "status", fid, *common)
    assert code == 0, err
    assert events[-1]["type"] == "fleet_view" and events[-1]["state"] == "baking", events[-1]
    assert events[-1]["baking"]["stage"] == "canary" and events[-1]["baking"]["left"] > 0
    code, _, err = cli(capsys, "fleet", "run", str(tmp_path / "fleet.toml"), "--yes", *common)
    assert code == 2 and "another vmssctl process runs the fleets" in err
    code, events, err = cli(capsys, "fleet", "pause", fid, *common)
    assert code == 0 and events[0]["type"] == "fleet_pause_requested", err
    assert json.loads(proc.stdout.readline())["type"] == "fleet_paused"
    code, events, err = cli(capsys, "fleet", "resume", fid, *common)
    assert code == 0, err
    assert json.loads(proc.stdout.readline())["type"] == "fleet_resumed"
    code, events, err = cli(capsys, "fleet", "abort", fid, *common)
    assert code == 0 and events[0]["type"] == "fleet_abort_requested", err
    rest = [json.loads(line) for line in proc.stdout]
    assert proc.wait(120) == 3, proc.stderr.read()[-2000:]
    assert rest[-2]["type"] == "fleet_aborted" and rest[-2]["baking"]
    assert rest[-1]["state"] == "aborted"
    assert not any(e["type"] == "stage_started" for e in rest)


def test_a_fleet_killed_mid_stage_resumes_when_run_again(tmp_path):
    """SIGKILL the `vmssctl fleet run` process while a stage runs; running it again recovers the fleet from
    DBOS's database and every set's rollout from its journal: every set ends on the new image, none twice."""
    emu = fleet_emulator(tmp_path / "emu")
    try:
        make_fleet(emu)
        (tmp_path / "fleet.toml").write_text(fleet_file(bake="2m", subscriptions=tuple(emu.info["subscriptions"])))
        args = [sys.executable, "-m", "vmssctl", "fleet", "run", str(tmp_path / "fleet.toml"), "--yes", "--emulator",
                str(emu.state_dir), "--journal", str(tmp_path / "journal.sqlite"), "-o", "json"]
        t0 = emu.now()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            if json.loads(line).get("type") == "stage_started" and json.loads(line).get("stage") == "pilot":
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(60)
        assert proc.returncode == -signal.SIGKILL
        r = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        events = [json.loads(line) for line in r.stdout.splitlines()]
        assert events[-2]["type"] == "fleet_succeeded" and events[-1]["state"] == "succeeded"
        assert all(v == {NEW} for v in versions(emu).values())
        stats = emu.stats(since=t0)["scaleSets"]
        assert all(set(stats[k]["upgrades"].values()) == {1} for k in versions(emu))
    finally:
        emu.stop()


S = "00000000-0000-0000-0000-00000000feed"
PLAN = [{"stage": "canary", "sets": [f"{S}/a/web"], "bake": 600, "approve": True},
        {"stage": "rest", "sets": [f"{S}/b/web", f"{S}/c/web"], "concurrency": 2}]
STARTED = [{"type": "fleet_started", "name": "nov", "time": 0}]
CANARY = [*STARTED, {"type": "approval_waiting", "stage": "canary", "when": "before", "time": 1},
          {"type": "stage_approved", "stage": "canary", "when": "before", "by": "ann@host", "time": 2},
          {"type": "stage_started", "stage": "canary", "sets": [f"{S}/a/web"], "time": 3},
          {"type": "sets_started", "stage": "canary", "keys": [f"{S}/a/web"], "time": 3},
          {"type": "set_finished", "stage": "canary", "key": f"{S}/a/web", "state": "succeeded", "rollout": "r-1",
           "code": 0, "time": 100},
          {"type": "stage_finished", "stage": "canary", "time": 100},
          {"type": "bake_started", "stage": "canary", "seconds": 600, "time": 100}]
REST = [*CANARY, {"type": "bake_finished", "stage": "canary", "time": 700},
        {"type": "stage_started", "stage": "rest", "time": 700},
        {"type": "sets_started", "stage": "rest", "keys": [f"{S}/b/web"], "time": 700},
        {"type": "set_finished", "stage": "rest", "key": f"{S}/b/web", "state": "failed", "error": "x", "time": 800}]


@pytest.mark.parametrize(("events", "status", "state", "stages", "sets", "headline"), [
    ([], "ENQUEUED", "queued", ["pending", "pending"], ["pending"] * 3, "queued"),
    (STARTED[:1] + CANARY[1:2], "PENDING", "waiting", ["waiting", "pending"], ["pending"] * 3,
     "waiting for approval of stage 'canary' (before it starts)"),
    (CANARY[:5], "PENDING", "running", ["running", "pending"], ["running", "pending", "pending"], "running"),
    (CANARY, "PENDING", "baking", ["baking", "pending"], ["succeeded", "pending", "pending"],
     "baking after stage 'canary' (6m40s left)"),
    ([*CANARY, {"type": "fleet_paused", "by": "bob"}], "PENDING", "paused", ["baking", "pending"],
     ["succeeded", "pending", "pending"], "paused"),
    ([*CANARY, {"type": "fleet_paused"}, {"type": "fleet_resumed"}], "PENDING", "baking", ["baking", "pending"],
     ["succeeded", "pending", "pending"], "baking after stage 'canary' (6m40s left)"),
    ([*CANARY, {"type": "fleet_aborted", "stage": "canary", "baking": True, "by": "bob"}], "SUCCESS", "aborted",
     ["aborted", "pending"], ["succeeded", "pending", "pending"], "aborted by bob while stage 'canary' baked"),
    ([*CANARY, {"type": "fleet_aborted", "stage": "canary", "baking": True},
      {"type": "rollback_started", "sets": 1}, {"type": "rollback_stage_started", "stage": "canary",
                                                 "sets": [f"{S}/a/web"]}], "SUCCESS", "rolling back",
     ["aborted", "pending"], ["rolling_back", "pending", "pending"], "rolling back"),
    ([*CANARY, {"type": "fleet_aborted", "stage": "canary", "baking": True},
      {"type": "rollback_started", "sets": 1}, {"type": "rollback_stage_started", "stage": "canary",
                                                 "sets": [f"{S}/a/web"]},
      {"type": "set_rolled_back", "stage": "canary", "key": f"{S}/a/web", "state": "rolled_back"},
      {"type": "fleet_rolled_back", "sets": 1, "failed": 0}], "SUCCESS", "rolled back",
     ["aborted", "pending"], ["rolled_back", "pending", "pending"], "rolled back (after: aborted by a person "
                                                                    "while stage 'canary' baked)"),
    ([*REST, {"type": "fleet_halted", "stage": "rest", "reason": "1 of 2 failed"}], "SUCCESS", "halted",
     ["done", "halted"], ["succeeded", "failed", "pending"], "halted: 1 of 2 failed"),
    ([*CANARY[:2], {"type": "stage_rejected", "stage": "canary", "when": "before", "by": "ann", "reason": "no"},
      {"type": "fleet_halted", "stage": "canary", "reason": "stage 'canary' was rejected by ann: no"}], "SUCCESS",
     "halted", ["rejected", "pending"], ["pending"] * 3, "halted: stage 'canary' was rejected by ann: no"),
    (REST, "ERROR", "failed", ["done", "running"], ["succeeded", "failed", "pending"],
     "failed: the fleet's workflow ended error"),
    (REST, "PENDING", "running", ["done", "running"], ["succeeded", "failed", "pending"], "running"),
])
def test_the_fleet_view_from_its_plan_and_events(events, status, state, stages, sets, headline):
    """One state per fleet, stage and set, from the plan, the events and DBOS's status: every view renders it."""
    from vmssctl.fleet.view import view

    fv = view("f-1", PLAN, events, status, now=300.0)
    assert (fv.state, [s.state for s in fv.stages], [v.state for v in fv.sets]) == (state, stages, sets)
    assert fv.headline() == headline
    assert sum(fv.counts.values()) == 3 and fv.label(fv.sets[0]) == "a/web"


def test_an_older_plan_and_a_set_s_progress_in_the_view():
    from vmssctl.fleet.view import view

    old = [{"stage": "all", "sets": ["a/web"], "subs": {"a/web": S}}]  # recorded by an earlier release
    progress = {f"{S}/a/web": {"rollout_id": "r-9", "batch_no": 2, "batches_total": 3, "done": 2, "total": 4}}
    fv = view("f-1", old, [*STARTED, {"type": "sets_started", "keys": [f"{S}/a/web"]}], "PENDING", progress)
    assert fv.sets[0].key == f"{S}/a/web" and fv.sets[0].rollout == "r-9"
    assert fv.to_json()["sets"][0]["progress"]["batch_no"] == 2
