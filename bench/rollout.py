"""Rollout efficiency: simulated duration against the ideal, and ARM requests per upgraded instance.

For 100 and 1,000 instances at batch 20 %: the emulator's clock is frozen and moved only by
the engine's own waits, so the rollout's duration is measured in simulated seconds, exactly
as an operator would experience it against Azure, independent of this machine's speed.

ideal = the sum of each batch's own simulated time (from its manualupgrade until its slowest
instance is healthy again, read off the emulator's availability record) plus pauses: what a
controller that reacted instantly and polled for free would take.
Targets: ratio <= 1.05 (in place and surge); requests per instance <= 0.5 at 100 and <= 0.3 at 1,000; client CPU
(this process: the engine, the SDK's pipeline, TLS) <= 3 ms per instance at 1,000; surge
beside the emulated Azure rolling upgrade with maxSurge; a bad image stopped
within the upgrade, the health grace period and two polls of its first batch (next to Azure's own).
Run: .venv/bin/python bench/rollout.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.emulator import cpu_seconds
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


def rollout(n: int, settings: dict, sinks: list | None = None):
    """A frozen emulator with an n-VM set, upgraded under ``settings``: (emulator, rg, exit code, t0, real s)."""
    e = start_emulator(Path(tempfile.mkdtemp(prefix="bench-rollout-")), "--time-scale", "0", "--throttle", "off")
    rg = e.group("bench")
    client = e.client()
    client.virtual_machine_scale_sets.begin_create_or_update(rg, "web", demo_scale_set(n), polling=False)
    e.admin("POST", "clock", {"advance": 900})
    api = ScaleSetApi(client, rg, "web")
    journal = Journal(Path(tempfile.mkdtemp()) / "journal.sqlite")
    t0 = e.now()
    e.admin("POST", "stats/reset")
    real, cpu, emulator_cpu = time.perf_counter(), time.process_time(), cpu_seconds(e.proc.pid)
    prepared = prepare(api, journal, e.connection, ImageChange(version="24.04.202611200"), load(None, settings))
    code = start(api, journal, e.connection, prepared, sinks or [])
    CLIENT_CPU[0] = time.process_time() - cpu  # this process is the client: vmssctl's engine, the SDK, TLS
    EMULATOR_CPU[0] = cpu_seconds(e.proc.pid) - emulator_cpu
    return e, rg, code, t0, time.perf_counter() - real


CLIENT_CPU = [0.0]  # the last rollout's CPU seconds in this process (the emulator runs in its own)
EMULATOR_CPU = [0.0]  # and the emulator's


def run(n: int) -> None:
    e, rg, code, t0, real = rollout(n, {"batch_percent": 20})
    try:
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
              f"min healthy {rec['minHealthy']}/{n}; real {real:.1f}s; client CPU {CLIENT_CPU[0] * 1000 / n:.2f} ms "
              f"per instance" + (f" (target <= 3 ms: {'met' if CLIENT_CPU[0] / n <= 0.003 else 'MISSED'})"
                                 if n >= 1000 else "")
              + f"; emulator CPU {EMULATOR_CPU[0] * 1000 / n:.2f} ms per instance")
    finally:
        e.stop()




def surge(n: int, size: int) -> float:
    """Surge against two references: nominal (create + grace + delete, no jitter) and ideal (per batch, from the
    scale-out until the availability record shows all new VMs healthy, plus the slowest possible delete, 20 %
    over nominal: the deletes themselves leave no mark in the record)."""
    sink = _Events()
    e, rg, code, t0, real = rollout(n, {"strategy": "surge", "max_surge": str(size)}, [sink])
    try:
        assert code == 0
        stats = e.stats(since=t0, records=True)
        rec = stats["scaleSets"][f"{rg}/web"]
        starts = [ev for ev in sink.events if ev["type"] == "batch_started"]
        nominal = len(starts) * (timing.CREATE + timing.HEALTH_GRACE + timing.DELETE)
        ideal = 0.0
        for ev in starts:
            top = n + ev["adding"]
            healthy_at = next(r["time"] for r in rec["records"] if r["time"] >= ev["time"] and r["healthy"] >= top)
            ideal += healthy_at - ev["time"] + timing.DELETE * (1 + timing.JITTER)
        took = stats["now"] - t0
        requests = stats["requests"]["total"]
        print(f"{n:>5} instances, surge of {size} ({len(starts)} batches): simulated {took:7.0f}s, ideal {ideal:7.0f}s "
              f"-> ratio {took / ideal:.3f} (vs nominal {nominal:.0f}s: {took / nominal:.3f}); {requests} ARM requests "
              f"= {requests / n:.3f} per instance; min healthy {rec['minHealthy']}/{n}; real {real:.1f}s")
        return took
    finally:
        e.stop()


def azure_surge(n: int, percent: int, ours: float) -> None:
    """The emulated Azure rolling upgrade with ``maxSurge: true`` on the same kind of set, batches of ``percent``:
    its simulated time beside vmssctl's surge (``ours``), and its lowest healthy count."""
    e = start_emulator(Path(tempfile.mkdtemp(prefix="bench-azsurge-")), "--time-scale", "0", "--throttle", "off")
    try:
        client = e.client()
        rg = e.group("azsurge")
        body = demo_scale_set(n, mode="Rolling")
        body["properties"]["upgradePolicy"]["rollingUpgradePolicy"] = {
            "maxBatchInstancePercent": percent, "maxSurge": True, "pauseTimeBetweenBatches": "PT0S"}
        client.virtual_machine_scale_sets.begin_create_or_update(rg, "web", body, polling=False)
        e.admin("POST", "clock", {"advance": 900})
        t0 = e.now()
        client.virtual_machine_scale_sets.begin_update(rg, "web", {"properties": {"virtualMachineProfile": {
            "storageProfile": {"imageReference": {"version": "24.04.202611200"}}}}}, polling=False)
        status = _rolling_outcome(e, client, rg, "web", t0, 36000)
        took = e.now() - t0
        rec = e.stats(since=t0)["scaleSets"][f"{rg}/web"]
        print(f"{n:>5} instances, Azure's rolling upgrade with maxSurge, batches of {percent} % ({status}): simulated "
              f"{took:7.0f}s; vmssctl surge / Azure = {ours / took:.3f}; min healthy {rec['minHealthy']}/{n}")
    finally:
        e.stop()


def _rolling_outcome(e, client, rg: str, name: str, t0: float, limit: float) -> str:
    """Move the frozen clock a second at a time until Azure's rolling upgrade ends; its final status."""
    status = "RollingForward"
    while status == "RollingForward" and e.now() - t0 < limit:
        e.admin("POST", "clock", {"advance": 1})
        code_ = client.virtual_machine_scale_set_rolling_upgrades.get_latest(rg, name).running_status.code
        status = getattr(code_, "value", code_)
    return status


class _Events:
    """A sink that keeps the engine's events (for the time-to-stop figure)."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def event(self, event: dict) -> None:
        self.events.append(event)

    def snapshot(self, snap) -> None:
        pass

    def close(self) -> None:
        pass


def time_to_stop(n: int = 20) -> None:
    """A bad image (booted VMs report HealthState/unhealthy after the 60 s grace period), side by side:
    vmssctl (batches of 20 %, no canary) and the emulated Azure rolling upgrade (20 % batches, Rolling policy),
    both on the same emulator. Time-to-stop is from the first batch's start to the decision to stop."""
    bad = "24.04.202612999"
    e = start_emulator(Path(tempfile.mkdtemp(prefix="bench-stop-")), "--time-scale", "0", "--throttle", "off")
    try:
        client = e.client()
        e.admin("PUT", "faults", {"rules": [{"match": {"version": bad}, "effect": "unhealthy"}]})
        rg = e.group("stop")
        client.virtual_machine_scale_sets.begin_create_or_update(rg, "ours", demo_scale_set(n), polling=False)
        azure = demo_scale_set(n, mode="Rolling")
        azure["properties"]["upgradePolicy"]["rollingUpgradePolicy"] = {
            "maxBatchInstancePercent": 20, "maxUnhealthyInstancePercent": 20,
            "maxUnhealthyUpgradedInstancePercent": 0, "pauseTimeBetweenBatches": "PT0S"}
        client.virtual_machine_scale_sets.begin_create_or_update(rg, "azure", azure, polling=False)
        e.admin("POST", "clock", {"advance": 900})

        api = ScaleSetApi(client, rg, "ours")
        journal = Journal(Path(tempfile.mkdtemp()) / "journal.sqlite")
        sink = _Events()
        e.admin("POST", "stats/reset")
        prepared = prepare(api, journal, e.connection, ImageChange(version=bad),
                           load(None, {"batch_percent": 20, "health_timeout": "10m"}))
        code = start(api, journal, e.connection, prepared, [sink])
        first = next(ev for ev in sink.events if ev["type"] == "batch_started")
        stop = next(ev for ev in sink.events if ev["type"] in ("batch_failed", "rollout_failed"))
        ours = stop["time"] - first["time"]
        requests = e.stats()["requests"]["total"]

        t0 = e.now()
        client.virtual_machine_scale_sets.begin_update(rg, "azure", {"properties": {"virtualMachineProfile": {
            "storageProfile": {"imageReference": {"version": bad}}}}}, polling=False)
        status = _rolling_outcome(e, client, rg, "azure", t0, 3600)
        theirs = e.now() - t0
        print(f"bad image, {n} instances, batches of {n // 5}: vmssctl stopped {ours:.0f}s after its first batch "
              f"started (exit {code}, {requests} ARM requests); Azure's rolling upgrade ({status}) after "
              f"{theirs:.0f}s; "
              f"upgrade ~{timing.upgrade_seconds():.0f}s + health grace {timing.HEALTH_GRACE:.0f}s + 2 polls of 10s = "
              f"{timing.upgrade_seconds() + timing.HEALTH_GRACE + 20:.0f}s (target)")
    finally:
        e.stop()


if __name__ == "__main__":
    print("rollout benchmark (batch 20 %, no pause, pages of 100, frozen emulator clock driven by the engine)")
    for n in (100, 1000):
        run(n)
    azure_surge(100, 20, surge(100, 20))
    azure_surge(900, 11, surge(900, 100))
    time_to_stop()
