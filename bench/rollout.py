"""Rollout efficiency: simulated duration against the ideal, and ARM requests per upgraded instance.

For 100 and 1,000 instances at batch 20 %: the emulator's clock is frozen and moved only by
the engine's own waits, so the rollout's duration is measured in simulated seconds, exactly
as an operator would experience it against Azure, independent of this machine's speed.

ideal = the sum of each batch's own simulated time (from its manualupgrade until its slowest
instance is healthy again, read off the emulator's availability record) plus pauses: what a
controller that reacted instantly and polled for free would take.
Targets: ratio <= 1.05, and < 0.5 requests per instance at 1,000 instances.
Run: .venv/bin/python bench/rollout.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import start_emulator
from vmssctl.azure import ScaleSetApi
from vmssctl.emulator import timing
from vmssctl.emulator.server import demo_scale_set
from vmssctl.policy import load
from vmssctl.rollout.journal import Journal
from vmssctl.target import ImageChange
from vmssctl.upgrade import prepare, start


def dips(records: list[dict], capacity: int) -> list[tuple[float, float]]:
    """(start, end) of every stretch with fewer than ``capacity`` healthy instances."""
    out, begin = [], None
    for r in records:
        if r["healthy"] < capacity and begin is None:
            begin = r["time"]
        elif r["healthy"] >= capacity and begin is not None:
            out.append((begin, r["time"]))
            begin = None
    return out


def run(n: int) -> None:
    e = start_emulator(Path(tempfile.mkdtemp(prefix="bench-rollout-")), "--time-scale", "0", "--throttle", "off")
    try:
        rg = e.group("bench")
        client = e.client()
        client.virtual_machine_scale_sets.begin_create_or_update(rg, "web", demo_scale_set(n), polling=False)
        e.admin("POST", "clock", {"advance": 900})
        api = ScaleSetApi(client, rg, "web")
        journal = Journal(Path(tempfile.mkdtemp()) / "journal.sqlite")
        policy = load(None, {"batch_percent": 20})
        t0 = e.now()
        e.admin("POST", "stats/reset")
        real = time.perf_counter()
        prepared = prepare(api, journal, e.connection, ImageChange(version="24.04.202611200"), policy)
        code = start(api, journal, e.connection, prepared, [])
        real = time.perf_counter() - real
        assert code == 0
        stats = e.stats(since=t0, records=True)
        t1 = stats["now"]
        rec = stats["scaleSets"][f"{rg}/web"]
        batches = dips(rec["records"], n)
        ideal = sum(end - begin for begin, end in batches)
        nominal = len(batches) * (timing.upgrade_seconds() + timing.HEALTH_GRACE)
        requests = stats["requests"]["total"]
        by_op = ", ".join(f"{k.split('_')[-1]} {v}" for k, v in sorted(stats["requests"]["byOperation"].items()))
        print(f"{n:>5} instances, {len(batches)} batches of {n // 5}: simulated {t1 - t0:7.0f}s, ideal {ideal:7.0f}s "
              f"-> ratio {(t1 - t0) / ideal:.3f} (vs nominal {nominal:.0f}s: {(t1 - t0) / nominal:.3f}); "
              f"{requests} ARM requests = {requests / n:.3f} per instance "
              f"({by_op}); "
              f"min healthy {rec['minHealthy']}/{n}; real {real:.1f}s")
    finally:
        e.stop()


if __name__ == "__main__":
    print("rollout benchmark (batch 20 %, no pause, pages of 100, frozen emulator clock driven by the engine)")
    for n in (100, 1000):
        run(n)
