"""Fleets: the fleet file (tables of cases), and fleets of 12 sets in 2 subscriptions run on DBOS (SQLite)
against a running emulator.

The emulator's clock runs (2,400 simulated seconds a real one) because a stage's sets roll out in parallel:
each set's engine waits on the clock in its own thread.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import cli, start_emulator
from vmssctl import durable
from vmssctl.errors import UsageError
from vmssctl.fleet.spec import SetRef, assign, parse
from vmssctl.rollout.journal import Journal

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
health_timeout = "5m"
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
    assert [(p.stage.name, [r.key for r in p.sets]) for p in plans] == [
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


@pytest.mark.parametrize(("halt", "failed", "started", "halts"), [
    ("", 0, 3, False), ("", 1, 3, True), ("[halt]\nmax_failed = 1\n", 1, 3, False),
    ("[halt]\nmax_failed_percent = 50\n", 1, 2, False), ("[halt]\nmax_failed_percent = 50\n", 2, 3, True)])
def test_halt_rules(halt, failed, started, halts):
    assert parse(f'[target]\nversion = "1.2.3"\n{halt}').halts(failed, started) is halts


# ---------------------------------------------------------------------------------------- on the emulator
def start_fleet_emulator(path):
    return start_emulator(path, "--time-scale", "2400", "--throttle", "off", "--subscriptions", "2")


@pytest.fixture(scope="module")
def fleet_emu(tmp_path_factory):
    """The twelve sets in two subscriptions, on an emulator of their own."""
    e = start_fleet_emulator(tmp_path_factory.mktemp("fleet-emu"))
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
    code, events, err = cli(capsys, "fleet", "run", str(tmp_path / "fleet.toml"), *common)
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
    assert all(v == {NEW} for v in versions(emu).values())
    stats = emu.stats(since=t0)["scaleSets"]
    assert all(set(stats[k]["upgrades"].values()) == {1} and stats[k]["minHealthy"] >= 2 for k in versions(emu))

    # a bad image: the canary stage fails, the fleet halts before the pilot, and rolls back
    emu.admin("PUT", "faults", {"rules": [{"match": {"version": BAD}, "effect": "unhealthy"}]})
    (tmp_path / "bad.toml").write_text(fleet_file(BAD, bake="1m", subscriptions=subs))
    code, events, err = cli(capsys, "fleet", "run", str(tmp_path / "bad.toml"), *common)
    assert code == 1, err
    halted = next(e for e in events if e["type"] == "fleet_halted")
    assert halted["stage"] == "canary"
    assert not any(e["type"] == "stage_started" and e["stage"] == "pilot" for e in events)
    fid = events[0]["fleet"]
    code, events, err = cli(capsys, "fleet", "rollback", fid, *common)
    assert code == 0, err
    assert events[-1]["type"] == "fleet_rolled_back"
    emu.admin("POST", "clock", {"advance": 600})
    assert all(v == {NEW} for v in versions(emu).values())  # the canary is back; nothing else was touched
    code, events, err = cli(capsys, "fleet", "status", fid, *common)
    assert code == 0 and any(e["type"] == "fleet_halted" for e in events)
    emu.admin("PUT", "faults", {"rules": []})


def test_status_of_a_running_fleet_a_second_runner_refused_pause_resume_and_abort(fleet_emu, tmp_path, capsys):
    """While a fleet runs (SQLite, in its own process): `fleet status` shows it so far without running anything,
    a second `fleet run` of the database is refused, `fleet pause` holds it and `fleet resume` lets it go on,
    and `fleet abort` stops it before its next stage."""
    emu = fleet_emu
    (tmp_path / "fleet.toml").write_text(fleet_file("24.04.202612300", bake="6h",
                                                    subscriptions=tuple(emu.info["subscriptions"])))
    common = ["--emulator", str(emu.state_dir), "--journal", str(tmp_path / "journal.sqlite"), "-o", "json"]
    proc = subprocess.Popen([sys.executable, "-m", "vmssctl", "fleet", "run", str(tmp_path / "fleet.toml"), *common],
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
    assert [e["type"] for e in events][-2:] == ["bake_started", "fleet_status"] and events[-1]["status"] == "PENDING"
    code, _, err = cli(capsys, "fleet", "run", str(tmp_path / "fleet.toml"), *common)
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
    assert rest[-1]["type"] == "fleet_aborted" and rest[-1]["baking"]
    assert not any(e["type"] == "stage_started" for e in rest)


def test_a_fleet_killed_mid_stage_resumes_when_run_again(tmp_path):
    """SIGKILL the `vmssctl fleet run` process while a stage runs; running it again recovers the fleet from
    DBOS's database and every set's rollout from its journal: every set ends on the new image, none twice."""
    emu = start_fleet_emulator(tmp_path / "emu")
    try:
        make_fleet(emu)
        (tmp_path / "fleet.toml").write_text(fleet_file(bake="2m", subscriptions=tuple(emu.info["subscriptions"])))
        args = [sys.executable, "-m", "vmssctl", "fleet", "run", str(tmp_path / "fleet.toml"), "--emulator",
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
        assert events[-1]["type"] == "fleet_succeeded"
        assert all(v == {NEW} for v in versions(emu).values())
        stats = emu.stats(since=t0)["scaleSets"]
        assert all(set(stats[k]["upgrades"].values()) == {1} for k in versions(emu))
    finally:
        emu.stop()


# ---------------------------------------------------------------------- several workers on real PostgreSQL
def test_three_workers_share_a_fleet_and_one_killed_is_taken_over(postgres, tmp_path):
    """Three `vmssctl worker` processes on one PostgreSQL database run a fleet of 30 sets; one is killed with
    SIGKILL mid-stage; the others take over its work: every set ends on the new image, none is upgraded twice,
    every set's floor held, and the default throttling never answered 429. The workers share nothing but the
    database: the sets' journal is there, so the rollouts the dead one had in flight are resumed elsewhere."""
    import time

    emu = start_emulator(tmp_path / "emu", "--time-scale", "1200", "--subscriptions", "2")  # default throttle
    workers: list[subprocess.Popen] = []
    try:
        subs = emu.info["subscriptions"]
        sets = [(i % 2, f"big-{i:02d}") for i in range(30)]  # (subscription index, resource group) of web
        emu.create_sets({(sub, rg): ["web"] for sub, rg in sets}, 2)
        (tmp_path / "fleet.toml").write_text(f'''
[target]
version = "{NEW}"
[select]
subscriptions = {json.dumps(subs)}
resource_groups = ["big-*"]
[policy]
health_timeout = "5m"
poll = "30s"                  # fewer looks a set: the three workers share one request budget in real time
[[stages]]
name = "canary"
sets = ["big-00/web"]
[[stages]]
name = "pilot"
match = "big-0*"
concurrency = 4
[[stages]]
name = "rest"
concurrency = 6
''')
        base = [sys.executable, "-m", "vmssctl"]
        for n in range(3):  # each as if on a machine of its own: no file in common, only the database (and ARM)
            home = tmp_path / f"machine-{n}"
            workers.append(subprocess.Popen([*base, "worker", "--database", postgres, "--executor-id", f"w{n}",
                                             "--heartbeat", "1s", "--takeover-after", "6s"],
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                                            env={**os.environ, "HOME": str(home),
                                                 "XDG_DATA_HOME": str(home / "data")}))
        for w in workers:  # each says so once its DBOS is up (the first one creates DBOS's tables)
            assert w.stdout is not None and "taking fleets" in w.stdout.readline()
        t0 = emu.now()
        fleet = subprocess.Popen([*base, "fleet", "run", str(tmp_path / "fleet.toml"), "--database", postgres,
                                  "--emulator", str(emu.state_dir), "-o", "json"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert fleet.stdout is not None
        events = []
        victim: int | None = None
        deadline = time.monotonic() + 240
        for line in fleet.stdout:
            events.append(json.loads(line))
            if events[-1].get("type") == "stage_started" and events[-1].get("stage") == "rest":
                victim = _driving(postgres, workers)  # a worker driving a rollout of the last stage right now
                workers[victim].send_signal(signal.SIGKILL)
                workers[victim].wait(10)
            assert time.monotonic() < deadline, events[-3:]
        bad = [e for e in events if e["type"] == "set_finished" and e["state"] != "succeeded"]
        assert fleet.wait(60) == 0, (fleet.stderr.read()[-2000:], [(e["set"], e["state"], e.get("error")) for e in bad])
        assert victim is not None
        assert events[-1]["type"] == "fleet_succeeded" and workers[victim].returncode == -signal.SIGKILL
        finished = [e for e in events if e["type"] == "set_finished"]
        assert len(finished) == 30 and {e["state"] for e in finished} == {"succeeded"}
        stats = emu.stats(since=t0)
        for _, rg in sets:
            rec = stats["scaleSets"][f"{rg}/web"]
            assert set(rec["upgrades"].values()) == {1} and len(rec["upgrades"]) == 2 and rec["minHealthy"] >= 1
        assert stats["requests"].get("throttled", 0) == 0
        # the sets the killed worker had in flight were resumed by another, from the journal in the database
        journal = Journal(postgres)
        resumed = [r.id for r in journal.list(100) if any(e["type"] == "rollout_resumed" for e in journal.events(r.id))]
        assert resumed and len(journal.list(100)) == 30, resumed
        c = durable.client(postgres)  # the fleet's stored input names the journal, without the database's URL
        assert c.list_workflows(workflow_ids=[events[0]["fleet"]], load_input=True)[0].input["args"][3] == \
            durable.THIS_DATABASE
        c.destroy()
        others = [w for n, w in enumerate(workers) if n != victim]
        said = _read_until(others, f"took over worker w{victim}", 45)  # exactly one of the others claims it
        for w in others:
            w.terminate()
        said += "".join(w.communicate(timeout=30)[0] for w in others)
        assert said.count(f"took over worker w{victim}") == 1, said
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
                w.wait(30)
        emu.stop()


def _driving(database: str, workers: list, seconds: float = 30) -> int:
    """The index of a worker that drives a set's rollout right now (it holds the set's claim in the journal)."""
    import time

    from vmssctl.rollout import claim

    journal, deadline = Journal(database), time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for row in journal.db.execute("SELECT scale_set, pid FROM claims").fetchall():
                if claim.holder(journal, row["scale_set"]) is not None:
                    for n, w in enumerate(workers):
                        if w.pid == row["pid"]:
                            return n
            time.sleep(0.01)
        raise AssertionError("no worker drives a rollout")
    finally:
        journal.close()


def _read_until(procs: list, needle: str, seconds: float) -> str:
    """What the processes print until one of them prints ``needle`` (or ``seconds`` pass)."""
    import select
    import time

    out, deadline = "", time.monotonic() + seconds
    while needle not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([p.stdout for p in procs], [], [], 1.0)
        for stream in ready:
            out += stream.readline()
    return out


def test_the_fleet_view_from_its_plan_and_events():
    from vmssctl.fleet.view import view

    plan = [{"stage": "canary", "sets": ["a/web"]}, {"stage": "rest", "sets": ["b/web", "c/web"]}]
    events = [{"type": "fleet_started", "name": "nov"}, {"type": "stage_started", "stage": "canary", "sets": ["a/web"]},
              {"type": "set_finished", "stage": "canary", "set": "a/web", "state": "succeeded", "rollout": "r-1"},
              {"type": "stage_finished", "stage": "canary"}, {"type": "bake_started", "stage": "canary"}]
    fv = view("f-1", plan, events, "PENDING")
    assert (fv.name, fv.state, fv.stages) == ("nov", "running", [("canary", "baking"), ("rest", "pending")])
    assert [(v.key, v.state) for v in fv.sets] == [("a/web", "succeeded"), ("b/web", "pending"), ("c/web", "pending")]
    events += [{"type": "bake_finished", "stage": "canary"}, {"type": "stage_started", "stage": "rest",
                                                               "sets": ["b/web", "c/web"]},
               {"type": "set_finished", "stage": "rest", "set": "b/web", "state": "failed", "error": "x"},
               {"type": "fleet_halted", "stage": "rest", "reason": "1 of 3 failed"}]
    fv = view("f-1", plan, events, "SUCCESS")
    assert (fv.state, fv.reason) == ("halted", "1 of 3 failed")
    assert fv.counts["failed"] == 1 and fv.counts["running"] == 1 and fv.counts["succeeded"] == 1
