"""Failed requests: what users behind a load balancer count while a scale set moves to a new image.

A 100-VM set behind a Standard load balancer (HTTP probe every 5 s, down after 2 misses) takes 500 requests a
second (0.2 s each, 5 % long-lived connections of 300 s on average) on a frozen emulator clock, moved only by the
rollout's own waits, so every figure is simulated and repeatable. Side by side, each on a fresh set:

- vmssctl in place (batches of 20 %), without and with ``--drain lb`` (30 s),
- vmssctl surge (20 at a time), without and with ``--drain lb`` (30 s: the old VMs it retires),
- Azure's rolling upgrade (emulated: Rolling policy, 20 % batches, the set's health extension),
- the 2016 ``vmssupgrade`` way: manualupgrade one update domain after another, waiting a fixed 5 minutes, no
  health check;
- vmssctl blue-green (a new set of 100 beside the old one, the old one drained at the switch and kept for a bake
  of 10 minutes, or 30 s, then scaled to 0);
- a service whose requests are all short (no long-lived connections): in place with a 5 s drain;
- and behind an Application Gateway instead (probe every 5 s, unhealthy after 2 misses, connection draining 60 s):
  vmssctl in place and surge, without and with ``--drain appgw`` (30 s).

Printed per row: requests failed (count and share, by cause), the rollout's simulated time (and, for a drained
run, its ratio to the same strategy without a drain), ARM requests per instance (Compute and Network: the
drain's reads and writes included), and the VM-hours paid beyond the set's own (a surge's extra VMs, blue/green's
second set). Draining removes what the probe's lag and short requests cost; long-lived
connections still open when the drain ends are cut (they last 300 s on average, exponentially: even a 300 s
drain leaves a third of them, at a cost in time the 10 % target cannot pay).
Run: .venv/bin/python bench/traffic.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import start_emulator
from tests.helpers import set_behind_a_load_balancer
from vmssctl.azure import ScaleSetApi
from vmssctl.policy import load
from vmssctl.rollout.journal import Journal
from vmssctl.target import ImageChange
from vmssctl.upgrade import prepare, start

N, RPS, NEW = 100, 500, "24.04.202611200"
LOAD = {"rule": "web", "rps": RPS, "meanDurationSeconds": 0.2, "longLivedShare": 0.05, "longLivedSeconds": 300}
SHORT = {**LOAD, "longLivedShare": 0.0}  # a service whose requests are all short: what a short drain is for


def behind_a_load_balancer(prefix: str, mode: str = "Manual", gateway: bool = False, users: dict = LOAD):
    """A frozen emulator, a group with the load balancer (or Application Gateway) and the set in its pool, the load
    started."""
    e = start_emulator(Path(tempfile.mkdtemp(prefix=f"bench-traffic-{prefix}-")), "--time-scale", "0",
                       "--throttle", "off")
    rg, _ = set_behind_a_load_balancer(e, N, gateway=gateway, mode=mode,
                                       rolling={"maxBatchInstancePercent": 20, "pauseTimeBetweenBatches": "PT0S"}
                                       if mode == "Rolling" else None)
    front = {"applicationGateway": "gw"} if gateway else {"loadBalancer": "lb"}
    load_id = e.admin("POST", "traffic", {"resourceGroup": rg, **front, **users})["id"]
    e.admin("POST", "clock", {"advance": 60})  # a minute of steady traffic first (nothing fails)
    return e, rg, e.client(), load_id


TIMES: dict[str, float] = {}  # simulated seconds of each undrained run, by strategy: what a drain is set against


def extra_vm_hours(stats: dict, t0: float) -> float:
    """VM-hours paid beyond the N the rollout started with: every set's capacity over time (a stopped VM being
    upgraded is still paid for), less N for the whole span."""
    now, paid = stats["now"], 0.0
    for s in stats["scaleSets"].values():
        rows = s.get("records") or []
        for a, b in zip(rows, [*rows[1:], {"time": now}], strict=True):
            start, end = max(a["time"], t0), max(b["time"], t0)
            paid += a["capacity"] * max(0.0, end - start)
    return max(0.0, paid - N * (now - t0)) / 3600


def report(label: str, e, load_id: str, t0: float, arm0: int, baseline: str | None = None) -> float:
    stats = e.admin("GET", f"stats?since={t0}&records=true")
    row = next(x for x in stats["traffic"] if x["id"] == load_id)
    by, took = row["failedBy"], e.now() - t0 - 60  # (the minute of traffic after the rollout left out)
    ratio = f" = {took / TIMES[baseline]:.2f}x {baseline} undrained" if baseline in TIMES else ""
    print(f"{label:<62} failed {row['failed']:>7,} of {row['requests']:>9,} ({row['failureRatio']:.3%}): "
          f"cut {by['cut']:,}, probe lag {by['probe-lag']:,}, no backend {by['no-backend']:,}; "
          f"simulated {took:6.0f}s{ratio}; {(stats['requests']['total'] - arm0) / N:.2f} ARM requests per instance; "
          f"{extra_vm_hours(stats, t0):.1f} extra VM-hours")
    return took


def vmssctl(label: str, settings: dict, gateway: bool = False, users: dict = LOAD) -> None:
    e, rg, client, load_id = behind_a_load_balancer("ours", gateway=gateway, users=users)
    try:
        api = ScaleSetApi(client, rg, "web")
        journal = Journal(Path(tempfile.mkdtemp()) / "journal.sqlite")
        t0, arm0 = e.now(), e.admin("GET", "stats")["requests"]["total"]
        prepared = prepare(api, journal, e.connection, ImageChange(version=NEW), load(None, settings))
        assert start(api, journal, e.connection, prepared, []) == 0
        e.admin("POST", "clock", {"advance": 60})  # and a minute after
        strategy = settings.get("strategy", "in-place") + (" behind a gateway" if gateway else "")
        baseline = "in-place" if strategy == "blue-green" else strategy  # (blue/green against the plain rollout)
        took = report(label, e, load_id, t0, arm0, baseline if settings.get("drain") != "none" else None)
        if settings.get("drain") == "none":
            TIMES[strategy] = took
    finally:
        e.stop()


def azure_rolling() -> None:
    e, rg, client, load_id = behind_a_load_balancer("azure", mode="Rolling")
    try:
        t0, arm0 = e.now(), e.admin("GET", "stats")["requests"]["total"]
        client.virtual_machine_scale_sets.begin_update(rg, "web", {"properties": {"virtualMachineProfile": {
            "storageProfile": {"imageReference": {"version": NEW}}}}}, polling=False)
        status = "RollingForward"
        while status == "RollingForward" and e.now() - t0 < 36_000:
            e.admin("POST", "clock", {"advance": 5})
            code = client.virtual_machine_scale_set_rolling_upgrades.get_latest(rg, "web").running_status.code
            status = getattr(code, "value", code)
        e.admin("POST", "clock", {"advance": 60})
        report(f"Azure's rolling upgrade, 20 % batches ({status})", e, load_id, t0, arm0)
    finally:
        e.stop()


def ud_walk() -> None:
    """vmssupgrade (2016): the model changed, then each update domain upgraded in turn, a fixed wait each."""
    e, rg, client, load_id = behind_a_load_balancer("udwalk")
    try:
        t0, arm0 = e.now(), e.admin("GET", "stats")["requests"]["total"]
        ops = client.virtual_machine_scale_sets
        ops.begin_update(rg, "web", {"properties": {"virtualMachineProfile": {"storageProfile": {
            "imageReference": {"version": NEW}}}}}, polling=False)
        e.admin("POST", "clock", {"advance": 30})
        vms = list(client.virtual_machine_scale_set_vms.list(rg, "web", expand="instanceView"))
        for ud in range(5):
            ids = [v.instance_id for v in vms if v.instance_view.platform_update_domain == ud]
            ops.begin_update_instances(rg, "web", {"instanceIds": ids}, polling=False)
            e.admin("POST", "clock", {"advance": 300})
        e.admin("POST", "clock", {"advance": 60})
        report("2016 vmssupgrade: one UD at a time, 5 min each", e, load_id, t0, arm0)
    finally:
        e.stop()


if __name__ == "__main__":
    print(f"traffic benchmark: {N} VMs behind a load balancer, {RPS} req/s (0.2 s, 5 % long-lived of 300 s), "
          "frozen clock")
    vmssctl("vmssctl in place, batches of 20 %", {"batch_percent": 20, "drain": "none"})
    vmssctl("vmssctl in place, batches of 20 %, drain 30 s", {"batch_percent": 20, "drain": "lb",
                                                               "drain_timeout": "30s"})
    vmssctl("vmssctl in place, batches of 20 %, drain 300 s", {"batch_percent": 20, "drain": "lb",
                                                                "drain_timeout": "300s"})
    vmssctl("vmssctl surge, 20 at a time", {"strategy": "surge", "max_surge": "20", "drain": "none"})
    vmssctl("vmssctl surge, 20 at a time, drain 30 s", {"strategy": "surge", "max_surge": "20", "drain": "lb",
                                                         "drain_timeout": "30s"})
    azure_rolling()
    ud_walk()
    vmssctl("vmssctl blue-green, drain 30 s, bake 10 min", {"strategy": "blue-green", "drain": "lb",
                                                           "drain_timeout": "30s", "bake": "10m"})
    vmssctl("vmssctl blue-green, drain 30 s, bake 30 s", {"strategy": "blue-green", "drain": "lb",
                                                          "drain_timeout": "30s", "bake": "30s"})
    vmssctl("short requests only: vmssctl in place, 20 %, drain 5 s", {"batch_percent": 20, "drain": "lb",
                                                                       "drain_timeout": "5s"}, users=SHORT)
    vmssctl("short requests only: vmssctl blue-green, drain 5 s, bake 30 s",
            {"strategy": "blue-green", "drain": "lb", "drain_timeout": "5s", "bake": "30s"}, users=SHORT)
    behind = "Application Gateway: vmssctl"
    vmssctl(f"{behind} in place, 20 %", {"batch_percent": 20, "drain": "none"}, gateway=True)
    vmssctl(f"{behind} in place, 20 %, drain 30 s", {"batch_percent": 20, "drain": "appgw", "drain_timeout": "30s"},
            gateway=True)
    vmssctl(f"{behind} surge, 20", {"strategy": "surge", "max_surge": "20", "drain": "none"}, gateway=True)
    vmssctl(f"{behind} surge, 20, drain 30 s", {"strategy": "surge", "max_surge": "20", "drain": "appgw",
                                                 "drain_timeout": "30s"}, gateway=True)
