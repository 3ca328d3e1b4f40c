"""How fast the command line answers: `vmssctl --help` and `vmssctl rollout list` (a journal with a few
rollouts), each run several times in a fresh process; prints min / median / max wall time.

Targets (issue "cost that grows no faster than the work"): --help <= 0.1 s, rollout list <= 0.3 s (median). Both
parse their arguments without importing the Azure SDK, and `rollout list` reads the journal without DBOS.
Run: .venv/bin/python bench/cli.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = 9


# As an installed vmssctl runs: its bytecode cached (a machine with PYTHONDONTWRITEBYTECODE set compiles every
# module on every start, 20-odd ms more).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(args: list[str], runs: int = RUNS) -> list[float]:
    subprocess.run([sys.executable, "-m", "vmssctl", *args], capture_output=True, env=ENV)  # (caches bytecode)
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vmssctl", *args], check=True, capture_output=True, env=ENV)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from vmssctl.rollout.journal import Journal

    journal = Path(tempfile.mkdtemp(prefix="bench-cli-")) / "journal.sqlite"
    j = Journal(journal)
    for k in range(5):  # a few rollouts to list
        j.create("00000000-0000-0000-0000-00000000feed", "rg", f"web-{k}", None, {"version": "2"},
                 {"version": "1"}, {}, {})
    instances_against_az()
    baseline = timed(["--version"])
    print(f"python -m vmssctl --version (start-up): median {statistics.median(baseline):.3f}s")
    for label, args in (("vmssctl --help", ["--help"]), ("vmssctl rollout list", ["rollout", "list", "--journal",
                                                                                   str(journal)])):
        t = timed(args)
        print(f"{label:<24} min {min(t):.3f}s  median {statistics.median(t):.3f}s  max {max(t):.3f}s")


def instances_against_az() -> None:
    """`vmssctl instances` against `az vmss list-instances` on the same 1,000-instance set of the same emulator
    (target: no slower). az runs from its own venv (make test installs it), with the emulator's az profile."""
    import shutil

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.conftest import start_emulator
    from vmssctl.emulator.server import demo_scale_set

    az = os.environ.get("VMSSCTL_AZ") or str(Path(__file__).resolve().parent.parent / ".venv-az" / "bin" / "az")
    e = start_emulator(Path(tempfile.mkdtemp(prefix="bench-cli-emu-")), "--time-scale", "0", "--throttle", "off")
    try:
        rg = e.group("cli")
        e.client().virtual_machine_scale_sets.begin_create_or_update(rg, "big", demo_scale_set(1000), polling=False)
        e.admin("POST", "clock", {"advance": 900})
        ours = timed(["instances", "-g", rg, "-n", "big", "--emulator", str(e.state_dir), "-o", "json"], runs=3)
        print(f"vmssctl instances (1,000) min {min(ours):.3f}s  median {statistics.median(ours):.3f}s")
        if not (shutil.which(az) or Path(az).exists()):
            print("az list-instances: not measured (no az CLI; make test installs it in .venv-az)")
            return
        config = tempfile.mkdtemp(prefix="bench-az-")  # the emulator's own az profile, never the user's
        env = {**os.environ, "AZURE_CONFIG_DIR": config, "REQUESTS_CA_BUNDLE": e.info["ca"],
               "IDENTITY_ENDPOINT": f"{e.endpoint}/metadata/identity/oauth2/token", "IDENTITY_HEADER": e.info["token"],
               "AZURE_CORE_COLLECT_TELEMETRY": "no", "AZURE_CORE_ONLY_SHOW_ERRORS": "true"}
        for setup in (["cloud", "register", "-n", "vmssctl-emulator", "--endpoint-resource-manager", e.endpoint],
                      ["cloud", "set", "-n", "vmssctl-emulator"], ["login", "--identity"]):
            subprocess.run([az, *setup], check=True, capture_output=True, env=env)
        theirs = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([az, "vmss", "list-instances", "-g", rg, "-n", "big", "--expand", "instanceView", "-o",
                            "json"], check=True, capture_output=True, env=env)
            theirs.append(time.perf_counter() - t0)
        m, t = statistics.median(ours), statistics.median(theirs)
        print(f"az vmss list-instances --expand instanceView (1,000) min {min(theirs):.3f}s  median {t:.3f}s  -> "
              f"vmssctl {m / t:.2f}x az (target <= 1: {'met' if m <= t else 'MISSED'})")
    finally:
        e.stop()


if __name__ == "__main__":
    main()
