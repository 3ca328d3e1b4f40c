"""Fleet efficiency: 100 scale sets x 20 instances across 4 subscriptions, 3 workers on PostgreSQL.

The emulator's clock runs at 20 simulated seconds a real one (every set's engine waits on it in its own
thread), with Compute's default throttling per subscription. Printed:
- simulated time of the fleet / ideal, where ideal = for each stage its slowest set's own rollout time
  (from the journal) plus the bakes: what a fleet runner with no overhead between sets and stages would take;
- ARM requests per instance and 429s (emulator stats), CPU seconds per worker (/proc).
Targets: <= 1.10 x ideal, 0 x 429.
Run: .venv/bin/python bench/fleet.py   (needs Debian's postgresql: make postgresql)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import start_emulator, throwaway_postgres
from vmssctl.rollout.journal import Journal

SETS, SIZE, SUBS, WORKERS, SCALE = 100, 20, 4, 3, 20
BAKE = 300


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    emu = start_emulator(work / "emu", "--time-scale", str(SCALE), "--subscriptions", str(SUBS))
    workers: list[subprocess.Popen] = []
    try:
        subs = emu.info["subscriptions"]
        emu.create_sets({(i % SUBS, f"bench-{i:03d}"): ["web"] for i in range(SETS)}, SIZE)
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
concurrency = 9
bake = "{BAKE}s"
[[stages]]
name = "rest"
concurrency = 90
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
            cpu = [cpu_seconds(w.pid) for w in workers]
            journal = Journal(database)
            own = {f"{x.subscription}/{x.resource_group}/{x.name}": (x.progress or {}).get("elapsed", 0.0) for x in
                   journal.recent(limit=1000)}
            journal.close()
        assert r.returncode == 0 and events[-1]["state"] == "succeeded", (r.stderr[-2000:], events[-3:])
        took = next(e for e in events if e["type"] == "fleet_succeeded")["time"] - events[1]["time"]
        stages = [e for e in events if e["type"] == "stage_started"]
        ideal = sum(max(own[k] for k in st["sets"]) for st in stages) + BAKE * (len(stages) - 1)
        stats = emu.stats()
        requests, throttled = stats["requests"]["total"], stats["requests"].get("throttled", 0)
        print(f"fleet: {SETS} sets x {SIZE} instances in {SUBS} subscriptions, {len(stages)} stages, {WORKERS} "
              f"workers on PostgreSQL: simulated {took:.0f}s, ideal {ideal:.0f}s -> ratio {took / ideal:.3f}; "
              f"{requests} ARM requests = {requests / (SETS * SIZE):.3f} per instance; {throttled} x 429; "
              f"CPU per worker {', '.join(f'{c:.1f}s' for c in cpu)}; real {real:.0f}s")
    finally:
        for w in workers:
            w.terminate()
            w.wait(30)
        emu.stop()


if __name__ == "__main__":
    main()
