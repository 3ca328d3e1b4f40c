"""Screenshots of the dashboard mid-rollout, at 20 and at 1,000 instances, its index, and a confirmation asked in
the page (docs/screenshots/*.png).

Starts an emulator and a dashboard, starts a rollout on each scale set through the dashboard's
own API, and photographs the page in headless Chromium while the rollout runs.
Run: .venv/bin/python docs/screenshots.py   (needs Debian's chromium)
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.conftest import start_emulator  # noqa: E402
from vmssctl.emulator.server import demo_scale_set  # noqa: E402

OUT = ROOT / "docs" / "screenshots"


def main() -> None:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    e = start_emulator(Path(tempfile.mkdtemp(prefix="shots-")), "--time-scale", "30", "--throttle", "off")
    where = Path(tempfile.mkdtemp())
    proc = subprocess.Popen([sys.executable, "-m", "vmssctl", "dashboard", "--emulator", str(e.state_dir), "--port",
                             "0", "--refresh", "1s", "--journal", str(where / "j.db"), "--token-file",
                             str(where / "token")], stdout=subprocess.PIPE, text=True)
    try:
        m = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=(\S+)", proc.stdout.readline())
        base, login = m.group(1), m.group(0)
        token = (where / "token").read_text()
        rg = e.group("shop-prod")
        client = e.client()
        for name, n in (("web", 20), ("big", 1000), ("api", 8)):
            client.virtual_machine_scale_sets.begin_create_or_update(rg, name, demo_scale_set(n), polling=False)
        e.admin("POST", "clock", {"advance": 900})
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as api:
            for name in ("web", "big"):
                r = api.post(f"/sets/{e.subscription}/{rg}/{name}/rollout",
                             json={"version": "24.04.202611200", "canary": "1", "batch_percent": "20", "pause": "30s"})
                r.raise_for_status()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(login)
            for name, n in (("web", 20), ("big", 1000)):
                page.goto(f"{base}/sets/{rg}/{name}")
                page.wait_for_selector("#conn.live")
                page.wait_for_function("Number(document.querySelector('#rollout .batch-no')?.textContent) >= 3",
                                       timeout=180_000)
                page.wait_for_selector("#grid .vm.s-upgrading, #grid .vm.s-initializing", timeout=120_000)
                time.sleep(1.5)
                path = OUT / f"dashboard-{n}.png"
                page.screenshot(path=str(path), full_page=True)
                print(f"wrote {path.relative_to(ROOT)}")
            page.goto(f"{base}/")  # the index: every set, its figures and its rollout
            page.wait_for_selector("table.sets tr.set")
            page.screenshot(path=str(OUT / "dashboard-index.png"), full_page=True)
            page.goto(f"{base}/sets/{rg}/api")  # a plan confirmed in the page
            page.wait_for_selector("#conn.live")
            page.fill('#rollout-form input[name="version"]', "24.04.202611200")
            page.click("#rollout-form button")
            page.wait_for_selector("dialog#ask[open]")
            page.screenshot(path=str(OUT / "dashboard-confirm.png"))
            print("wrote docs/screenshots/dashboard-index.png, dashboard-confirm.png")
            browser.close()
    finally:
        proc.terminate()
        e.stop()


if __name__ == "__main__":
    main()
