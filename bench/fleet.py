"""Fleet efficiency: N scale sets (default 100) x 20 instances across 4 subscriptions, 3 workers on PostgreSQL.

The emulator's clock runs at 20 simulated seconds a real one (every set's engine waits on it in its own
thread), with Compute's default throttling per subscription. First one set is upgraded alone (the lone-set
time); then the fleet. Printed:
- simulated time of the fleet / two ideals: the slowest set of each stage (from the journal) plus the bakes,
  and the lone set's time for each wave a stage's concurrency allows plus the bakes (what a fleet runner with
  no overhead, whose sets were no slower together than alone, would take);
- ARM requests per instance and 429s (emulator stats); the time to create the sets (a resource group and a
  set each, eight PUTs at a time, as a template deployment or terraform would; target 5 s at 500 sets); CPU
  per instance and peak memory of the emulator and of each worker (/proc).
Targets: <= 1.10 x the lone-set ideal, 0 x 429; at 500 sets, CPU per instance within 1.2 x the 100-set figure.
Run: .venv/bin/python bench/fleet.py [SETS]   (needs Debian's postgresql: make postgresql)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import start_emulator, throwaway_postgres
from vmssctl.rollout.journal import Journal

SIZE, SUBS, WORKERS, SCALE = 20, 4, 3, 20
BAKE = 300
PILOT, REST_CONCURRENCY = 9, 90


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def peak_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM), MiB."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def lone_set(emu, work: Path) -> float:
    """One set of SIZE upgraded alone on the same emulator, with the fleet's policy: its simulated seconds."""
    emu.create_sets({(0, "lone"): ["web"]}, SIZE)
    r = subprocess.run([sys.executable, "-m", "vmssctl", "upgrade", "-g", "lone", "-n", "web", "--version",
                        "24.04.202611200", "--batch-percent", "20", "--yes", "-o", "json", "--emulator",
                        str(emu.state_dir), "--journal", str(work / "lone.sqlite")],
                       capture_output=True, text=True, timeout=1200)
    done = [json.loads(x) for x in r.stdout.splitlines() if '"rollout_succeeded"' in x]
    assert r.returncode == 0 and done, r.stderr[-2000:]
    return float(done[0]["seconds"])


def main() -> None:
    sets = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    if not 10 <= sets <= 1000:
        raise SystemExit("bench/fleet.py: the fleet size must be 10 to 1000 sets")
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    emu = start_emulator(work / "emu", "--time-scale", str(SCALE), "--subscriptions", str(SUBS))
    workers: list[subprocess.Popen] = []
    try:
        subs = emu.info["subscriptions"]
        alone = lone_set(emu, work)
        created = time.perf_counter()
        emu.create_sets({(i % SUBS, f"bench-{i:03d}"): ["web"] for i in range(sets)}, SIZE, writers=8)
        created = time.perf_counter() - created
        emu_cpu = cpu_seconds(emu.proc.pid)
        (work / "fleet.toml").write_text(f'''
[target]
version = "24.04.202611200"
[select]
subscriptions = {json.dumps(subs)}
resource_groups = ["bench-*"]
[policy]
batch_percent = 20
[[stages]]
name = "canary"
sets = ["bench-000/web"]
bake = "{BAKE}s"
[[stages]]
name = "pilot"
match = "bench-00*"
concurrency = {PILOT}
bake = "{BAKE}s"
[[stages]]
name = "rest"
concurrency = {REST_CONCURRENCY}
''')
        with throwaway_postgres() as pg:
            database = pg.url
            base = [sys.executable, "-m", "vmssctl"]
            for n in range(WORKERS):  # each says which sets it runs: its log in a file, never a full pipe
                log = work / f"worker-{n}.log"
                w = subprocess.Popen([*base, "worker", "--database", database, "--executor-id", f"w{n}"],
                                     stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)
                while "taking fleets" not in log.read_text():
                    assert w.poll() is None, log.read_text()
                    time.sleep(0.05)
                workers.append(w)
            emu.admin("POST", "stats/reset")
            real = time.perf_counter()
            r = subprocess.run([*base, "fleet", "run", str(work / "fleet.toml"), "--yes", "--database", database,
                                "--emulator", str(emu.state_dir), "-o", "json"],  # the journal is in the database
                               capture_output=True, text=True, timeout=3600)
            real = time.perf_counter() - real
            events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
            (work / "events.jsonl").write_text(r.stdout)  # (the fleet's events, for a closer look)
            cpu = [cpu_seconds(w.pid) for w in workers]
            memory = [peak_mib(w.pid) for w in workers]
            emu_cpu = cpu_seconds(emu.proc.pid) - emu_cpu
            journal = Journal(database)
            own = {f"{x.subscription}/{x.resource_group}/{x.name}": (x.progress or {}).get("elapsed", 0.0) for x in
                   journal.recent(limit=1000)}
            journal.close()
        assert r.returncode == 0 and events[-1]["state"] == "succeeded", (r.stderr[-2000:], events[-3:])
        took = next(e for e in events if e["type"] == "fleet_succeeded")["time"] - events[1]["time"]
        stages = [e for e in events if e["type"] == "stage_started"]
        ideal = sum(max(own[k] for k in st["sets"]) for st in stages) + BAKE * (len(stages) - 1)
        concurrency = {"canary": 1, "pilot": PILOT, "rest": REST_CONCURRENCY}
        waves = sum(-(-len(st["sets"]) // concurrency[st["stage"]]) for st in stages)  # (a stage's waves of sets)
        lone_ideal = waves * alone + BAKE * (len(stages) - 1)
        times = sorted(own[k] for st in stages for k in st["sets"])
        gaps = took - ideal
        # (where a stage runs in more than one wave, its slowest set is not its length)
        one_wave = all(len(st["sets"]) <= concurrency[st["stage"]] for st in stages)
        stats = emu.stats()
        requests, throttled = stats["requests"]["total"], stats["requests"].get("throttled", 0)
        n = sets * SIZE
        print(f"fleet: {sets} sets x {SIZE} instances in {SUBS} subscriptions, {len(stages)} stages, {WORKERS} "
              f"workers on PostgreSQL: simulated {took:.0f}s; ideal by the slowest set of each stage {ideal:.0f}s "
              f"-> {took / ideal:.3f}; lone set {alone:.0f}s x {waves} waves + bakes = {lone_ideal:.0f}s -> "
              f"{took / lone_ideal:.3f} (target <= 1.10); {requests} ARM requests = {requests / n:.3f} per instance; "
              f"{throttled} x 429; sets created in {created:.1f}s; emulator CPU {emu_cpu * 1000 / n:.1f} ms per "
              f"instance, peak {peak_mib(emu.proc.pid):.0f} MiB; workers' CPU "
              f"{', '.join(f'{c * 1000 / n:.1f}' for c in cpu)} ms per instance, peak "
              f"{', '.join(f'{m:.0f}' for m in memory)} MiB; real {real:.0f}s")
        print(f"  the sets' own rollouts: median {times[len(times) // 2]:.0f}s, 90th percentile "
              f"{times[len(times) * 9 // 10]:.0f}s, slowest {times[-1]:.0f}s (alone: {alone:.0f}s)"
              + (f"; the fleet's own time between and around them (starts, stage ends): {gaps:.0f}s" if one_wave
                 else "") + f"; events in {work}")
    finally:
        for w in workers:
            w.terminate()
            w.wait(30)
        emu.stop()


if __name__ == "__main__":
    main()
