"""How fast the command line answers: `vmssctl --help` and `vmssctl rollout list` (a journal with a few
rollouts), each run several times in a fresh process; prints min / median / max wall time.

Targets (issue "cost that grows no faster than the work"): --help <= 0.1 s, rollout list <= 0.3 s (median). Both
parse their arguments without importing the Azure SDK, and `rollout list` reads the journal without DBOS.
Run: .venv/bin/python bench/cli.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = 9


def timed(args: list[str]) -> list[float]:
    out = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vmssctl", *args], check=True, capture_output=True)
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
    baseline = timed(["--version"])
    print(f"python -m vmssctl --version (start-up): median {statistics.median(baseline):.3f}s")
    for label, args in (("vmssctl --help", ["--help"]), ("vmssctl rollout list", ["rollout", "list", "--journal",
                                                                                   str(journal)])):
        t = timed(args)
        print(f"{label:<24} min {min(t):.3f}s  median {statistics.median(t):.3f}s  max {max(t):.3f}s")


if __name__ == "__main__":
    main()
