"""Dashboard cost: server time to render the grid for 1,000 instances, and ARM traffic with five open tabs.

Targets: render < 100 ms; at most one instance listing per refresh interval however many tabs are open.
Run: .venv/bin/python bench/dashboard.py
"""

from __future__ import annotations

import contextlib
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import start_emulator
from vmssctl.azure import ScaleSetApi
from vmssctl.dashboard import html
from vmssctl.emulator.server import demo_scale_set

REFRESH = 5.0
WINDOW = 30.0


def start_dashboard(emu) -> tuple[subprocess.Popen, str, str]:
    where = Path(tempfile.mkdtemp())
    proc = subprocess.Popen([sys.executable, "-m", "vmssctl", "dashboard", "--emulator", str(emu.state_dir), "--port",
                             "0", "--refresh", f"{REFRESH:g}s", "--journal", str(where / "j.db"), "--token-file",
                             str(where / "token")], stdout=subprocess.PIPE, text=True)
    m = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=(\S+)", proc.stdout.readline())
    return proc, m.group(1), (where / "token").read_text()


def tabs(base: str, token: str, path: str, n: int, seconds: float) -> None:
    """``n`` tabs on the event stream for ``seconds``. The dashboard sends a tab nothing while nothing changes, so
    a read may wait past the end: it gives up a second after it (a tab that waited for ever hung the bench)."""
    stop = time.monotonic() + seconds

    def tab() -> None:
        wait = httpx.Timeout(10.0, read=seconds + 1)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=wait) as c, \
                c.stream("GET", path) as r, contextlib.suppress(httpx.ReadTimeout):
            for _ in r.iter_lines():
                if time.monotonic() > stop:
                    break
    threads = [threading.Thread(target=tab) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main() -> None:
    e = start_emulator(Path(tempfile.mkdtemp(prefix="bench-dash-")), "--time-scale", "60", "--throttle", "off")
    proc = None
    try:
        rg = e.group("bench")
        client = e.client()
        client.virtual_machine_scale_sets.begin_create_or_update(rg, "big", demo_scale_set(1000), polling=False)
        e.admin("POST", "clock", {"advance": 900})
        api = ScaleSetApi(client, rg, "big")
        ss, insts = api.get(), api.instances()
        times = []
        for _ in range(30):
            t = time.perf_counter()
            page = html.grid(ss, insts)
            times.append(time.perf_counter() - t)
        proc, base, token = start_dashboard(e)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
            c.get(f"/sets/{e.subscription}/{rg}/big/grid").raise_for_status()  # warm the shared view
            http_times = []
            for _ in range(20):
                t = time.perf_counter()
                c.get(f"/sets/{e.subscription}/{rg}/big/grid").raise_for_status()
                http_times.append(time.perf_counter() - t)
        pages = -(-1000 // 100)
        print(f"dashboard benchmark (1,000 instances, refresh {REFRESH:g}s)")
        print(f"  render the grid (server, in process): median {statistics.median(times) * 1000:5.1f} ms, "
              f"max {max(times) * 1000:5.1f} ms, {len(page) / 1024:.0f} KiB of HTML   target < 100 ms")
        print(f"  GET the grid over HTTP (cached view): median {statistics.median(http_times) * 1000:5.1f} ms")
        for n in (1, 5):
            before = e.stats()["requests"]["byOperation"].get("VirtualMachineScaleSetVMs_List", 0)
            tabs(base, token, f"/sets/{e.subscription}/{rg}/big/events", n, WINDOW)
            lists = e.stats()["requests"]["byOperation"].get("VirtualMachineScaleSetVMs_List", 0) - before
            per_min = lists / pages * 60 / WINDOW
            print(f"  {n} open tab(s) for {WINDOW:.0f}s: {lists} list requests = {lists / pages:.0f} listings = "
                  f"{per_min:.1f} listings/min ({lists * 60 / WINDOW:.0f} ARM requests/min); "
                  f"ceiling one per {REFRESH:g}s = {60 / REFRESH:.0f}/min")
    finally:
        if proc:
            proc.terminate()
        e.stop()


if __name__ == "__main__":
    main()
