"""The dashboard in real headless Chromium (Debian's), driven by Playwright, against a live emulator."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import start_emulator
from tests.helpers import instances
from vmssctl.emulator.server import demo_scale_set

CHROMIUM = "/usr/bin/chromium"
SUB = "00000000-0000-0000-0000-00000000feed"  # the emulator's (first) subscription: part of a set's URL
NEW = "24.04.202611200"


@pytest.fixture(scope="module")
def live_emu(tmp_path_factory):
    """A running clock (120x): rollouts progress on their own while the browser watches."""
    e = start_emulator(tmp_path_factory.mktemp("dash-emu"), "--time-scale", "120", "--throttle", "off",
                       "--subscriptions", "2")
    yield e
    e.stop()


@pytest.fixture(scope="module")
def dashboard(live_emu, tmp_path_factory):
    where = tmp_path_factory.mktemp("dash-journal")
    journal, token_file = where / "journal.sqlite", where / "token"
    proc = subprocess.Popen([sys.executable, "-m", "vmssctl", "dashboard", "--emulator", str(live_emu.state_dir),
                             "--port", "0", "--refresh", "1s", "--journal", str(journal), "--token-file",
                             str(token_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"(http://127\.0\.0\.1:(\d+))/\?token=(\S+)", line)
    assert m, line + proc.stderr.read()
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    yield {"base": m.group(1), "port": int(m.group(2)), "token": token_file.read_text(), "url": m.group(0),
           "journal": journal}
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("Debian chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


def make_set(emu, capacity: int, name: str = "web") -> str:
    rg = emu.group()
    emu.client().virtual_machine_scale_sets.begin_create_or_update(rg, name, demo_scale_set(capacity), polling=False)
    emu.admin("POST", "clock", {"advance": 900})
    return rg


def login_link(dashboard) -> str:
    """A fresh one-time login link, minted with the API token (each browser page logs in anew)."""
    r = httpx.get(f"{dashboard['base']}/login", headers={"Authorization": f"Bearer {dashboard['token']}"})
    r.raise_for_status()
    return r.json()["url"]


def open_page(browser, dashboard, path: str, width: int = 1200, height: int = 800):
    """A fresh page logged in and at ``path``; a native dialog fails the test (every question is asked in the
    page)."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.on("dialog", lambda dialog: pytest.fail(f"a native dialog: {dialog.message}"))
    page.goto(login_link(dashboard))
    page.goto(f"{dashboard['base']}{path}")
    return page


def open_set(browser, dashboard, rg: str, name: str = "web"):
    # (group and name alone: the connection's subscription)
    page = open_page(browser, dashboard, f"/sets/{rg}/{name}", 1400, 1000)
    page.wait_for_selector("#conn.live", timeout=15000)
    return page


def run_fleet(live_emu, dashboard, fleet_file) -> tuple[subprocess.Popen, str]:
    """`vmssctl fleet run` on the emulator beside the dashboard's journal: the process and its fleet's id."""
    import json

    proc = subprocess.Popen([sys.executable, "-m", "vmssctl", "fleet", "run", str(fleet_file), "--yes",
                             "--emulator", str(live_emu.state_dir), "--journal", str(dashboard["journal"]),
                             "-o", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, json.loads(proc.stdout.readline())["fleet"]


def confirm(page, answer: str = "ok") -> str:
    """Answer the page's own confirmation (a <dialog>, never a native one); returns what it asked."""
    page.wait_for_selector("dialog#ask[open]", timeout=20000)
    text = page.locator("dialog#ask .ask-text").inner_text()
    page.click(f"dialog#ask .ask-{answer}")
    page.wait_for_selector("dialog#ask:not([open])", state="attached", timeout=5000)
    return text


def wait_for(predicate, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_grid_shows_each_instance_in_its_cell_with_its_colour(live_emu, dashboard, browser):
    rg = make_set(live_emu, 12)
    page = open_set(browser, dashboard, rg)
    for inst in instances(live_emu, rg):
        chip = page.locator(f'#grid td[data-ud="{inst.update_domain}"][data-fd="{inst.fault_domain}"] '
                            f'.vm[data-id="{inst.instance_id}"]')
        assert chip.count() == 1
        assert "s-current" in chip.get_attribute("class")
    assert page.locator("#grid .vm").count() == 12
    # a model change turns every chip 'outdated' without reloading the page
    live_emu.client().virtual_machine_scale_sets.begin_update(rg, "web", {"properties": {
        "virtualMachineProfile": {"storageProfile": {"imageReference": {"version": NEW}}}}}, polling=False)
    page.wait_for_function("document.querySelectorAll('#grid .vm.s-outdated').length === 12", timeout=20000)
    page.close()


def test_fault_domain_upgrade_from_the_page(live_emu, dashboard, browser):
    rg = make_set(live_emu, 10)
    live_emu.client().virtual_machine_scale_sets.begin_update(rg, "web", {"properties": {
        "virtualMachineProfile": {"storageProfile": {"imageReference": {"version": NEW}}}}}, polling=False)
    page = open_set(browser, dashboard, rg)
    page.wait_for_function("document.querySelectorAll('#grid .vm.s-outdated').length === 10", timeout=20000)
    page.click('#grid th.fd[data-fd="2"]')
    in_fd = {i.instance_id for i in instances(live_emu, rg) if i.fault_domain == 2}
    assert page.locator("#selcount").inner_text() == f"{len(in_fd)} selected"
    page.click('button.op[data-action="upgrade"]')
    assert confirm(page) == f"upgrade instance(s) {', '.join(sorted(in_fd, key=int))} of {rg}/web?"
    page.wait_for_selector("#status .msg", timeout=10000)
    assert "accepted" in page.locator("#status .msg").first.inner_text()
    wait_for(lambda: all(i.latest_model and i.healthy for i in instances(live_emu, rg) if i.instance_id in in_fd),
             what="FD 2 upgraded")
    others = [i for i in instances(live_emu, rg) if i.instance_id not in in_fd]
    assert others and not any(i.latest_model for i in others)
    selector = ",".join(f'#grid .vm.s-current[data-id="{i}"]' for i in in_fd)
    page.wait_for_function(f"document.querySelectorAll('{selector}').length === {len(in_fd)}", timeout=20000)
    page.wait_for_selector("#status .msg:has-text('Succeeded')", timeout=20000)
    page.close()


def test_rollout_from_the_page_progresses_live_pauses_and_resumes(live_emu, dashboard, browser):
    rg = make_set(live_emu, 8)
    page = open_set(browser, dashboard, rg)
    form = page.locator("#rollout-form")
    form.locator('input[name="version"]').fill(NEW)
    form.locator('input[name="batch_size"]').fill("2")
    form.locator('input[name="canary"]').fill("0")
    form.locator('input[name="pause"]').fill("20s")
    form.locator("button").click()
    assert "4 batch(es)" in confirm(page)
    page.wait_for_selector('#rollout .rollout[data-state="running"] .batch-no', timeout=20000)
    page.wait_for_function("Number(document.querySelector('#rollout .batch-no')?.textContent) >= 1", timeout=20000)
    # controls act only when they can: a second rollout waits for this one, resume for a pause
    assert page.locator("#rollout-form button").is_disabled()
    assert page.locator('#rollout button[data-op="resume"]').is_disabled()
    assert "a live process drives it" in page.locator('#rollout button[data-op="resume"]').get_attribute("title")
    page.click('#rollout button.rollout-op[data-op="pause"]')
    confirm(page)
    page.wait_for_selector('#rollout .rollout[data-state="paused"]', timeout=60000)
    page.wait_for_selector('#rollout button[data-op="pause"][disabled]', timeout=20000)
    assert page.locator('#rollout button[data-op="resume"]').is_enabled()
    done_when_paused = page.locator("#rollout .done").inner_text()
    upgrades = live_emu.stats()["requests"]["byOperation"]["VirtualMachineScaleSets_UpdateInstances"]
    paused_at = live_emu.now()  # paused: a simulated minute and a half passes, and nothing starts
    wait_for(lambda: live_emu.now() >= paused_at + 90, what="90 simulated seconds while paused")
    assert live_emu.stats()["requests"]["byOperation"]["VirtualMachineScaleSets_UpdateInstances"] == upgrades
    assert page.locator("#rollout .done").inner_text() == done_when_paused
    assert page.locator('#rollout .rollout[data-state="paused"]').count() == 1
    page.click('#rollout button.rollout-op[data-op="resume"]')
    confirm(page)
    page.wait_for_selector('#rollout .rollout[data-state="succeeded"]', timeout=90000)
    assert all(i.latest_model and i.healthy for i in instances(live_emu, rg))
    assert "succeeded" in page.locator("#history").inner_text()
    page.close()


def test_the_plan_is_confirmed_in_the_page_and_a_plan_with_nothing_to_do_offers_no_start(live_emu, dashboard,
                                                                                          browser):
    rg = make_set(live_emu, 6)
    page = open_set(browser, dashboard, rg)
    assert page.locator('button.op[data-action="upgrade"]').is_disabled()  # nothing selected yet
    page.click('#grid .vm[data-id="0"]')
    assert page.locator('button.op[data-action="upgrade"]').is_enabled()
    form = page.locator("#rollout-form")
    form.locator('input[name="version"]').fill(NEW)
    form.locator('input[name="batch_size"]').fill("3")
    form.locator("button").click()
    plan = confirm(page, "cancel")  # the plan the CLI prints, in the page; cancelled, nothing starts
    assert "healthy floor" in plan and "batch(es)" in plan and "estimate" in plan
    with httpx.Client(base_url=dashboard["base"], headers={"Authorization": f"Bearer {dashboard['token']}"}) as c:
        assert not [r for r in c.get("/rollouts").json() if r["resource_group"] == rg]
    form.locator('input[name="version"]').fill("")  # the set's own image: every VM already runs it
    form.locator("button").click()
    page.wait_for_selector("dialog#ask[open]", timeout=20000)
    assert page.locator("dialog#ask .ask-text").inner_text().startswith("nothing to do")
    assert page.locator("dialog#ask .ask-ok").is_hidden()
    confirm(page, "cancel")
    page.close()


def test_the_index_lists_every_set_of_both_subscriptions_with_its_figures_and_filters(live_emu, dashboard, browser):
    sub1, sub2 = live_emu.info["subscriptions"]
    live_emu.create_sets({(0, "index-a"): ["web"], (0, "index-b"): ["api"]}, 4)
    live_emu.create_sets({(1, "index-c"): ["web"]}, 3)
    live_emu.admin("POST", "clock", {"advance": 900})
    auth = {"Authorization": f"Bearer {dashboard['token']}"}
    with httpx.Client(base_url=dashboard["base"], headers=auth, timeout=30) as c:
        r = c.post(f"/sets/{sub2}/index-c/web/rollout", json={"version": NEW, "batch_size": "1", "pause": "10m"})
        assert r.status_code == 200, r.text
        rid = r.json()["message"].split()[1]
    page = open_page(browser, dashboard, "/", 1400, 900)
    rows = page.locator("table.sets tr.set")
    keys = rows.evaluate_all("rs => rs.map(r => r.dataset.set)")
    for key in (f"{sub1}/index-a/web", f"{sub1}/index-b/api", f"{sub2}/index-c/web"):
        assert key in keys
    assert page.locator("table.sets tr.sub").count() == 2  # each subscription under its name
    a = page.locator(f'tr.set[data-set="{sub1}/index-a/web"]')
    assert "Uniform" in a.inner_text() and "Manual" in a.inner_text()  # the model, from the listing at once
    # the figures from the sets' instances, read in the background: the table brings them on its next refresh
    page.wait_for_selector(f'tr.set[data-set="{sub1}/index-a/web"] td[data-healthy]', timeout=20000)
    assert a.locator("td[data-healthy]").inner_text() == "4/4" and a.locator("td[data-on]").inner_text() == "4 of 4"
    c_row = page.locator(f'tr.set[data-set="{sub2}/index-c/web"]')
    page.wait_for_function(f"document.querySelector('tr.set[data-set=\"{sub2}/index-c/web\"]')"
                           "?.textContent.includes('running batch 1 of 3')", timeout=30000)  # (refreshes itself)
    page.fill("#filter", "index-b")
    assert page.locator("table.sets tr.set:visible").count() == 1
    assert page.locator(f'tr.set[data-set="{sub1}/index-b/api"]').is_visible()
    assert page.locator("table.sets tr.sub:visible").count() == 1  # the other subscription's heading goes too
    page.fill("#filter", "running")
    assert page.locator("table.sets tr.set:visible").count() == 1 and c_row.is_visible()
    page.click(f'tr.set[data-set="{sub2}/index-c/web"] a')
    page.wait_for_url(re.compile(rf"/sets/{sub2}/index-c/web$"))
    page.close()
    with httpx.Client(base_url=dashboard["base"], headers=auth, timeout=30) as c:  # (CSRF: a bearer needs none)
        assert c.post(f"/rollouts/{rid}/abort", json={}).status_code == 200


def test_requests_without_the_token_or_csrf_are_refused(live_emu, dashboard):
    base, token = dashboard["base"], dashboard["token"]
    with httpx.Client(base_url=base) as anon:
        assert anon.get("/").status_code == 401
        assert anon.get(f"/sets/{SUB}/demo-rg/demo-vmss/grid").status_code == 401
        assert anon.get("/static/app.js").status_code == 401
        assert anon.get("/", params={"token": "guess"}).status_code == 401
        assert anon.post(f"/sets/{SUB}/x/y/scale", json={"capacity": 0}).status_code == 401
        assert anon.get("/", headers={"Host": f"evil.example:{dashboard['port']}"}).status_code == 400
    with httpx.Client(base_url=base, follow_redirects=True) as browser_like:
        link = login_link(dashboard)
        assert browser_like.get(link).status_code in (200, 404)
        assert browser_like.cookies.get("vmssctl_session")
        with httpx.Client(base_url=base) as thief:  # the link worked once; it is dead now
            assert thief.get(link).status_code == 401
            assert thief.get("/", params={"token": token}).status_code == 401  # the API token is no login link
            assert thief.get("/login").status_code == 401
        rg = make_set(live_emu, 2)
        # a cross-site form POST carries the cookie at best, never the CSRF token
        r = browser_like.post(f"/sets/{SUB}/{rg}/web/scale", json={"capacity": 0})
        assert r.status_code == 403
        r = browser_like.post(f"/sets/{SUB}/{rg}/web/scale", json={"capacity": 0},
                              headers={"Origin": "https://evil.example", "X-CSRF-Token": "x"})
        assert r.status_code == 403
    assert len(instances(live_emu, rg)) == 2


def test_every_route_needs_a_session_or_the_token_and_every_write_the_csrf_token():
    """Security is middleware: walk every route of the app, in process (nothing to reach: the checks come first).
    Without credentials every one is 401; with a browser session but no CSRF token every state-changing method
    is 403; from a foreign Host, 400. A route added tomorrow is covered the day it is added."""
    import asyncio
    import concurrent.futures
    import uuid

    from starlette.routing import Route

    from vmssctl.azure import Connection
    from vmssctl.dashboard.app import Dashboard, build_app

    d = Dashboard(Connection("00000000-0000-0000-0000-000000000001", "https://127.0.0.1:9", None, "x"), None,
                  port=8123)
    app = build_app(d)
    values = {"sub": str(uuid.UUID(int=1)), "rg": "rg", "name": "web", "fid": "f-1", "op": "pause", "rid": "r-1",
              "file": "app.js"}
    routes = [r for r in app.routes if isinstance(r, Route)]
    assert len(routes) >= 18
    session = d.new_session()

    async def walk() -> None:
        base, transport = "http://127.0.0.1:8123", httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base) as anon, \
                httpx.AsyncClient(transport=transport, base_url=base, cookies={"vmssctl_session": session}) as browser:
            for route in routes:
                path = route.path_format.format(**values)
                for method in sorted(route.methods or ()):
                    if method == "HEAD":
                        continue
                    assert (await anon.request(method, path)).status_code == 401, (method, path)
                    foreign = await anon.request(method, path, headers={"Host": "evil.example:8123"})
                    assert foreign.status_code == 400, (method, path)
                    if method not in ("GET", "HEAD", "OPTIONS"):
                        r = await browser.request(method, path, json={})
                        assert r.status_code == 403, (method, path, r.status_code)
    # In a thread of its own: when a browser test ran before in this process, Playwright's sync API leaves an
    # event loop running in the main thread, where asyncio.run refuses to start.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, walk()).result()


def test_zonal_grid_api_operations_and_shared_polling(live_emu, dashboard):
    import threading

    rg = live_emu.group()
    live_emu.client().virtual_machine_scale_sets.begin_create_or_update(
        rg, "zonal", demo_scale_set(6, zones=["1", "2", "3"]), polling=False)
    live_emu.admin("POST", "clock", {"advance": 900})
    auth = {"Authorization": f"Bearer {dashboard['token']}"}
    with httpx.Client(base_url=dashboard["base"], headers=auth, timeout=30) as c:
        grid = c.get(f"/sets/{SUB}/{rg}/zonal/grid").text
        assert [f'data-zone="{z}"' in grid for z in "123"] == [True] * 3
        assert grid.count('class="vm ') == 6
        r = c.post(f"/sets/{SUB}/{rg}/zonal/scale", json={"capacity": 9})
        assert r.status_code == 200 and r.json()["ok"]
        r = c.post(f"/sets/{SUB}/{rg}/zonal/model", json={"version": "22.04.x"})
        assert r.status_code == 400 and "the 'version' field" in r.json()["message"]
        r = c.post(f"/sets/{SUB}/{rg}/zonal/action", json={"action": "explode", "instance_ids": ["1"]})
        assert r.status_code == 400
        for action in ("reimage", "restart", "poweroff", "start", "deallocate"):
            r = c.post(f"/sets/{SUB}/{rg}/zonal/action", json={"action": action, "update_domain": 0})
            assert r.status_code in (200, 409), (action, r.text)
    wait_for(lambda: len(instances(live_emu, rg, "zonal")) == 9, what="scale-out to 9")

    # three tabs open for three seconds at a 1 s refresh: listings are shared, not tripled
    before = live_emu.stats()["requests"]["byOperation"].get("VirtualMachineScaleSetVMs_List", 0)
    stop = time.monotonic() + 3

    def tab() -> None:
        with httpx.Client(base_url=dashboard["base"], headers=auth, timeout=None) as c, \
                c.stream("GET", f"/sets/{SUB}/{rg}/zonal/events") as r:
            for _ in r.iter_lines():
                if time.monotonic() > stop:
                    break
    threads = [threading.Thread(target=tab) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    listings = live_emu.stats()["requests"]["byOperation"]["VirtualMachineScaleSetVMs_List"] - before
    assert 1 <= listings <= 5


def test_a_set_behind_a_load_balancer_shows_its_rules_and_the_plan_drains_it(live_emu, dashboard):
    from tests.helpers import set_behind_a_load_balancer

    rg, _ = set_behind_a_load_balancer(live_emu, 4)
    auth = {"Authorization": f"Bearer {dashboard['token']}"}
    with httpx.Client(base_url=dashboard["base"], headers=auth, timeout=30) as c:
        page = c.get(f"/sets/{SUB}/{rg}/web").text
        assert "load balancing" in page and f"{rg}/lb rule web (probe http): 4 Up, 0 Down" in page
        r = c.post(f"/sets/{SUB}/{rg}/web/plan", json={"version": NEW, "drain_timeout": "20s"})
        assert r.status_code == 200, r.text
        assert "drain: each batch out of the set's load balancers first" in r.json()["message"]
        r = c.post(f"/sets/{SUB}/{rg}/web/plan", json={"version": NEW, "drain": "hook"})
        assert r.status_code == 400 and "the dashboard runs no commands" in r.json()["message"], r.text


def test_a_rollout_run_by_the_cli_shows_live_on_the_page(live_emu, dashboard, browser):
    rg = make_set(live_emu, 6)
    page = open_set(browser, dashboard, rg)
    proc = subprocess.Popen([sys.executable, "-m", "vmssctl", "upgrade", "-g", rg, "-n", "web", "--emulator",
                             str(live_emu.state_dir), "--journal", str(dashboard["journal"]), "--version", NEW,
                             "--batch-size", "2", "--yes", "-o", "json"], stdout=subprocess.DEVNULL)
    try:
        page.wait_for_selector('#rollout .rollout[data-state="running"] .health', timeout=30000)
        assert "floor" in page.locator("#rollout .health").inner_text()
        page.wait_for_selector('#rollout .rollout[data-state="succeeded"]', timeout=90000)
    finally:
        assert proc.wait(90) == 0
    page.close()


def test_the_confirmation_shows_the_plan_and_errors_name_the_form_fields(live_emu, dashboard):
    rg = make_set(live_emu, 10)
    auth = {"Authorization": f"Bearer {dashboard['token']}"}
    with httpx.Client(base_url=dashboard["base"], headers=auth, timeout=30) as c:
        r = c.post(f"/sets/{SUB}/{rg}/web/plan", json={"version": NEW, "batch_size": "3", "canary": "1"})
        assert r.status_code == 200, r.text
        plan = r.json()["message"]
        assert "healthy floor 7 of 10" in plan and "4 batch(es)" in plan and "estimate" in plan
        assert "simulated" in plan
        r = c.post(f"/sets/{SUB}/{rg}/web/plan", json={"version": NEW, "batch_size": "100000"})
        assert r.status_code == 400 and "the 'batch size' field" in r.json()["message"]
        assert "--" not in r.json()["message"]
        r = c.post(f"/sets/{SUB}/{rg}/web/plan", json={"version": NEW, "strategy": "blue-green", "bake": "5m"})
        assert r.status_code == 200 and "strategy: blue/green" in r.json()["message"], r.text
        r = c.post(f"/sets/{SUB}/{rg}/web/plan", json={"version": NEW, "bake": "5m"})
        assert r.status_code == 400 and "the 'bake (blue-green)' field applies to" in r.json()["message"]
    assert not any(i.latest_model and i.image.exact_version == NEW for i in instances(live_emu, rg))


def test_arm_unreachable_is_a_banner_not_a_scale_set(tmp_path):
    token_file = tmp_path / "token"
    env = {**os.environ, "VMSSCTL_TOKEN": "x", "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001"}
    proc = subprocess.Popen([sys.executable, "-m", "vmssctl", "dashboard", "--endpoint", "https://127.0.0.1:9",
                             "--journal", str(tmp_path / "j.sqlite"), "--token-file", str(token_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        m = re.search(r"(http://127\.0\.0\.1:\d+)/", proc.stdout.readline())
        assert m
        r = httpx.get(m.group(1) + "/", headers={"Authorization": f"Bearer {token_file.read_text()}"}, timeout=60)
        assert r.status_code == 200
        assert 'class="banner"' in r.text and "Cannot reach ARM" in r.text and "(error)" not in r.text
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_fleet_over_two_subscriptions_waits_for_approval_on_its_page_and_its_tiles_open_the_right_sets(
        live_emu, dashboard, browser, tmp_path):
    """A fleet over two subscriptions (sets of 4 VMs in the first, one of 3 in the second), run by the CLI beside
    the dashboard's journal: its page waits for the canary's approval, which the Approve button gives (recorded
    with who, through the dashboard); then the stages run, the tiles change colour live (the page reloads itself
    while the fleet runs), the list and the page agree, and each tile opens its own set, in its own
    subscription. (The emulator keeps group names unique across its subscriptions; the same rg/name in two
    subscriptions is covered by the fleet's own tests.)"""

    sub1, sub2 = live_emu.info["subscriptions"]
    live_emu.create_sets({(0, "fleetdash-a"): ["web"], (0, "fleetdash-b"): ["web"]}, 4)
    live_emu.create_sets({(1, "fleetdash-c"): ["web"]}, 3)
    (tmp_path / "fleet.toml").write_text(f'''
name = "dash"
[target]
version = "{NEW}"
[select]
subscriptions = ["{sub1}", "{sub2}"]
resource_groups = ["fleetdash-*"]
[policy]
batch_percent = 50
[[stages]]
name = "canary"
sets = ["fleetdash-a/web"]
approve = true
[[stages]]
name = "rest"
concurrency = 2
''')
    proc, fid = run_fleet(live_emu, dashboard, tmp_path / "fleet.toml")
    try:
        page = open_page(browser, dashboard, f"/fleets/{fid}")
        page.wait_for_selector('.approval[data-stage="canary"] button[data-op="approve"]', timeout=30000)
        assert page.locator(".fleet-state").first.get_attribute("data-state") == "waiting"
        assert page.locator(".tile").count() == 3 and page.locator(".tile.f-running").count() == 0
        page.click('.approval button[data-op="approve"]')
        assert confirm(page) == "Approve stage canary of fleet " + fid + "?"
        page.wait_for_selector(".fleet-state.fs-succeeded", timeout=120000)  # reloads while it runs
        tiles = page.locator(".tile")
        assert tiles.count() == 3 and set(tiles.evaluate_all("ts => ts.map(t => t.dataset.state)")) == {"succeeded"}
        assert "approved by" in page.locator('section.stage[data-stage="canary"] h3').inner_text()
        assert "(dashboard)" in page.locator('section.stage[data-stage="canary"] h3').inner_text()
        page.click(f'.tile[data-set="{sub2}/fleetdash-c/web"]')  # a set of the second subscription
        page.wait_for_url(re.compile(rf"/sets/{sub2}/fleetdash-c/web$"))
        page.wait_for_selector("#conn.live", timeout=15000)
        assert page.locator("#grid .vm").count() == 3 and "vmssctl emulator 2" in page.locator("h2").inner_text()
        page.go_back()
        page.click(f'.tile[data-set="{sub1}/fleetdash-b/web"]')
        page.wait_for_url(re.compile(rf"/sets/{sub1}/fleetdash-b/web$"))
        page.wait_for_selector("#conn.live", timeout=15000)
        assert page.locator("#grid .vm").count() == 4
        page.goto(f"{dashboard['base']}/fleets")
        row = page.locator(f'tr[data-fleet="{fid}"]')
        assert row.locator(".fleet-state").get_attribute("data-state") == "succeeded"
        assert row.locator('[data-count="succeeded"]').inner_text() == "succeeded 3"
        page.goto(f"{dashboard['base']}/")  # the sets of both subscriptions, each under its subscription's name
        links = page.locator('table.sets a[data-set*="/fleetdash-"]')
        assert sorted(links.evaluate_all("ls => ls.map(l => l.dataset.set)")) == sorted(
            [f"{sub1}/fleetdash-a/web", f"{sub1}/fleetdash-b/web", f"{sub2}/fleetdash-c/web"])
        assert "vmssctl emulator 2" in page.locator("table.sets").inner_text()
        page.close()
        assert proc.wait(60) == 0, proc.stderr.read()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_tab_is_sent_nothing_when_nothing_changed(frozen, tmp_path):
    """On a frozen clock, the dashboard's refreshes read ARM again and find the same set: they send an open tab not
    one byte; the first thing it is sent after them is the change that did happen."""
    rg = make_set(frozen, 4)
    token_file = tmp_path / "token"
    proc = subprocess.Popen([sys.executable, "-m", "vmssctl", "dashboard", "--emulator", str(frozen.state_dir),
                             "--port", "0", "--refresh", "1s", "--journal", str(tmp_path / "journal.sqlite"),
                             "--token-file", str(token_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        m = re.search(r"(http://127\.0\.0\.1:\d+)/", proc.stdout.readline())
        assert m, proc.stderr.read()
        auth = {"Authorization": f"Bearer {token_file.read_text()}"}
        page = f"/sets/{SUB}/{rg}/web"
        with httpx.Client(base_url=m.group(1), headers=auth, timeout=30) as tab, \
                tab.stream("GET", page + "/events") as stream:
            chunks, pending = stream.iter_bytes(), bytearray()

            def next_event() -> tuple[str, bytes]:
                """The next event's kind and its bytes as they came (``event:``/``data:`` lines, a blank line)."""
                while b"\n\n" not in pending:
                    pending.extend(next(chunks))
                end = pending.index(b"\n\n") + 2
                raw = bytes(pending[:end])
                del pending[:end]
                return raw.split(b"\n", 1)[0].decode().removeprefix("event: "), raw

            first = set()
            while "history" not in first:  # (the first refresh sends every part once)
                first.add(next_event()[0])
            assert {"grid", "summary", "rollout", "history"} <= first and not pending

            def listings() -> int:
                return frozen.stats()["requests"]["byOperation"].get("VirtualMachineScaleSetVMs_List", 0)
            before = listings()
            wait_for(lambda: listings() >= before + 3, what="three more refreshes")  # (each: a new view, the same)
            with frozen.http() as h:  # then one VM is stopped (on a frozen clock: at once 'stopping')
                h.post(f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/"
                       "virtualMachineScaleSets/web/virtualMachines/0/poweroff",
                       params={"api-version": "2024-11-01"}).raise_for_status()
            received = stream.num_bytes_downloaded
            kind, raw = next_event()
            assert kind == "grid" and b"stopping" in raw, raw[:300]
            # every byte sent since the first refresh is that change's: the refreshes that found nothing new sent 0
            assert stream.num_bytes_downloaded - received == len(raw) + len(pending)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("parts, sent", [
    # the first of each part goes; the same again goes nowhere; a change goes
    ([("grid", "a"), ("grid", "a"), ("grid", "a")], [True, False, False]),
    ([("grid", "a"), ("summary", "a"), ("grid", "b"), ("grid", "b"), ("grid", "a")], [True, True, True, False, True]),
])
def test_a_tab_is_sent_a_part_only_when_it_changed(parts, sent):
    """The events stream (a tab) re-renders the grid on every refresh from ARM; it sends only what changed, so a
    set where nothing happens costs its tabs nothing."""
    from vmssctl.dashboard.app import Sent

    tab = Sent()
    assert [tab.new(kind, text) for kind, text in parts] == sent


def test_a_stage_is_rejected_with_its_reason_asked_in_the_page(live_emu, dashboard, browser, tmp_path):
    """Reject asks why in the page's own question (Enter answers it); the fleet halts with the reason, and no set
    of the stage started."""

    live_emu.create_sets({(0, "rejectdash-a"): ["web"]}, 2)
    (tmp_path / "fleet.toml").write_text(f'''
name = "reject"
[target]
version = "{NEW}"
[select]
resource_groups = ["rejectdash-*"]
[[stages]]
name = "only"
approve = true
''')
    proc, fid = run_fleet(live_emu, dashboard, tmp_path / "fleet.toml")
    try:
        page = open_page(browser, dashboard, f"/fleets/{fid}")
        page.click('.approval[data-stage="only"] button[data-op="reject"]', timeout=30000)
        page.wait_for_selector("dialog#ask[open] .ask-input:not([hidden])", timeout=10000)
        assert "Reject stage only" in page.locator("dialog#ask .ask-text").inner_text()
        page.fill("dialog#ask .ask-input", "the canary's error rate doubled")
        page.press("dialog#ask .ask-input", "Enter")
        assert proc.wait(60) != 0
        page.wait_for_selector(".fleet-state.fs-halted", timeout=30000)  # (the page reloads while it runs)
        assert "doubled" in page.locator("main").inner_text()
        page.close()
        assert not any(i.latest_model and i.image.exact_version == NEW for i in instances(live_emu, "rejectdash-a"))
    finally:
        if proc.poll() is None:
            proc.kill()
