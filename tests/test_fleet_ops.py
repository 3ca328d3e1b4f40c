"""Fleets as an operator runs them for a week: a file run again, one state in every view (the CLI's table and
JSON, `fleet run`'s own view, the dashboard's list and page), approvals from the CLI, a rejection; and every bad
input or broken environment as one line, exit 2, nothing written.

The fleets run on SQLite against an emulator whose clock runs 2,400 simulated seconds a real one.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import subprocess
import sys

import httpx
import pytest

from tests.conftest import Background, cli, fleet_emulator

NEW, NEWER = "24.04.202611200", "24.04.202612300"


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    e = fleet_emulator(tmp_path_factory.mktemp("fleet-ops-emu"))
    yield e
    e.stop()


def fleet_file(groups: str, version: str = NEW, stages: str = "[[stages]]\nname = \"all\"\nconcurrency = 5\n",
               name: str = "ops") -> str:
    """A fleet file. Its health timeout is 2 h: 3 real seconds at the fleet emulator's 2,400x (15 min was 0.375 s,
    and a pause of a loaded machine failed the blue/green fleet's set once in a full run); no test here waits for
    one to pass."""
    return f'''name = "{name}"
[target]
version = "{version}"
[select]
resource_groups = ["{groups}"]
[policy]
batch_percent = 50
health_timeout = "2h"
{stages}'''


def flags(emu, tmp_path) -> list[str]:
    return ["--emulator", str(emu.state_dir), "--journal", str(tmp_path / "journal.sqlite"), "-o", "json"]


def upgrades(emu, since: float) -> dict[str, list[int]]:
    """How often each instance of each set was upgraded since ``since`` (the emulator's own record)."""
    return {k: sorted(v["upgrades"].values()) for k, v in emu.stats(since=since)["scaleSets"].items()}


# ---------------------------------------------------------------------------------------------- run again
def test_a_finished_fleet_run_again_with_a_set_added_upgrades_only_the_new_one(emu, tmp_path, capsys):
    """One stage of ten sets run to the end, then the same file again after an eleventh set appeared: a second run
    of the same fleet, exit 0, the ten `unchanged` (nothing upgraded twice), the new one upgraded."""
    emu.create_sets({(0, f"again-{n:02d}"): ["web"] for n in range(10)}, 2)
    (tmp_path / "fleet.toml").write_text(fleet_file("again-*"))
    t0 = emu.now()
    code, events, err = cli(capsys, "fleet", "run", str(tmp_path / "fleet.toml"), "--yes", *flags(emu, tmp_path))
    assert code == 0, err
    first = events[0]["fleet"]
    assert events[-1]["counts"]["succeeded"] == 10
    emu.create_sets({(0, "again-10"): ["web"]}, 2)
    code, events, err = cli(capsys, "fleet", "run", str(tmp_path / "fleet.toml"), "--yes", *flags(emu, tmp_path))
    assert code == 0, err
    assert events[0]["fleet"] == f"{first}.2" and events[0]["new"]
    view = events[-1]
    assert (view["state"], view["counts"]["unchanged"], view["counts"]["succeeded"]) == ("succeeded", 10, 1)
    assert {s["set"]: s["state"] for s in view["sets"]}["again-10/web"] == "succeeded"
    done = upgrades(emu, t0)
    assert all(done[f"again-{n:02d}/web"] == [1, 1] for n in range(11))  # each instance once, over both runs
    code, listed, err = cli(capsys, "fleet", "list", *flags(emu, tmp_path))
    assert code == 0 and [f["fleet"] for f in listed][:2] == [f"{first}.2", first], err
    assert [f["state"] for f in listed][:2] == ["succeeded", "succeeded"]


def test_a_fleet_of_blue_green_rollouts_leaves_each_set_beside_its_green_one(emu, tmp_path, capsys):
    """strategy = "blue-green" in a fleet's policy: every set gets its green set on the new image, the old ones go
    to 0 after the bake; the fleet's view counts them as any other rollout."""
    emu.create_sets({(0, f"bg-{n}"): ["web"] for n in range(3)}, 2)
    (tmp_path / "fleet.toml").write_text(fleet_file("bg-*").replace(
        "batch_percent = 50\n", 'strategy = "blue-green"\nbake = "1m"\n'))
    code, events, err = cli(capsys, "fleet", "run", str(tmp_path / "fleet.toml"), "--yes", *flags(emu, tmp_path))
    assert code == 0, (err, [e for e in events if e.get("type") in ("set_finished", "set_rolled_back", "fleet_halted")])
    assert events[-1]["counts"]["succeeded"] == 3
    sets = emu.stats()["scaleSets"]
    for n in range(3):
        assert sets[f"bg-{n}/web"]["capacity"] == 0 and sets[f"bg-{n}/web-{NEW}"]["healthy"] == 2


# ------------------------------------------------------------------------------------ one state, every view
def _dashboard(emu, tmp_path):
    """A dashboard process on the fleets' journal (and so their database): its base URL and API headers."""
    token = tmp_path / "token"
    proc = subprocess.Popen([sys.executable, "-m", "vmssctl", "dashboard", "--emulator", str(emu.state_dir),
                             "--journal", str(tmp_path / "journal.sqlite"), "--token-file", str(token)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    m = re.search(r"(http://127\.0\.0\.1:\d+)/", proc.stdout.readline() if proc.stdout else "")
    assert m, proc.stderr.read() if proc.stderr else ""
    return proc, m.group(1), {"Authorization": f"Bearer {token.read_text()}"}


def _pages(base: str, headers: dict, fid: str) -> tuple[str, dict[str, int], str, dict[str, int]]:
    """The state and counts the dashboard's fleet list and fleet page show."""
    def counts(text: str) -> dict[str, int]:
        return {k: int(n) for k, n in re.findall(r'data-count="(\w+)">[\w ]+? (\d+)<', text)}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
        page = c.get(f"/fleets/{fid}").text
        listing = c.get("/fleets").text
    row = re.search(rf'<tr data-fleet="{re.escape(fid)}">(.*?)</tr>', listing, re.S)
    assert row, listing[-2000:]
    state = re.search(r'class="fleet-state[^"]*" data-state="([^"]+)"', page)
    listed = re.search(r'class="fleet-state[^"]*" data-state="([^"]+)"', row.group(1))
    assert state and listed
    return state.group(1), counts(page.split('<section class="stage"')[0]), listed.group(1), counts(row.group(1))


def test_baking_paused_aborted_and_rolled_back_read_the_same_in_every_view(emu, tmp_path, capsys):
    """A fleet that bakes after its canary: `fleet status` (JSON and table) and the dashboard's list and page all
    say baking, then paused, then (after abort and rollback) rolled back, with the same counts; `fleet status`
    needs no connection flags (the fleet knows its connection)."""
    emu.create_sets({(0, "views-a"): ["web"], (0, "views-b"): ["web", "api"]}, 2)
    stages = '[[stages]]\nname = "canary"\nsets = ["views-a/web"]\nbake = "6h"\n[[stages]]\nname = "rest"\n'
    (tmp_path / "fleet.toml").write_text(fleet_file("views-*", NEWER, stages))
    journal = ["--journal", str(tmp_path / "journal.sqlite")]
    run = Background("fleet", "run", str(tmp_path / "fleet.toml"), "--yes", *flags(emu, tmp_path))
    dash, base, headers = _dashboard(emu, tmp_path)
    try:
        fid = run.until("fleet")["fleet"]
        run.until("bake_started")

        def status() -> dict:
            code, out, err = cli(capsys, "fleet", "status", fid, *journal, "-o", "json")
            assert code == 0, err
            return out[-1]
        view = status()
        assert (view["state"], view["baking"]["stage"], view["counts"]) == ("baking", "canary", {
            "pending": 2, "running": 0, "succeeded": 1, "unchanged": 0, "failed": 0, "aborted": 0,
            "rolling_back": 0, "rolled_back": 0})
        assert 0 < view["baking"]["left"] <= 6 * 3600
        assert _pages(base, headers, fid) == ("baking", {"pending": 2, "succeeded": 1}, "baking",
                                              {"pending": 2, "succeeded": 1})
        from vmssctl.cli import main

        assert main(["fleet", "status", fid, *journal]) == 0  # the table, for a person
        assert "baking after stage 'canary'" in capsys.readouterr().out
        code, _, err = cli(capsys, "fleet", "pause", fid, *journal, "-o", "json")
        assert code == 0, err
        run.until("fleet_paused")
        assert status()["state"] == "paused"
        assert _pages(base, headers, fid)[::2] == ("paused", "paused")
        code, _, err = cli(capsys, "fleet", "abort", fid, *journal, "-o", "json")
        assert code == 0, err
        assert run.finish() == 3
        assert run.events[-1]["state"] == "aborted"  # `fleet run`'s own view, as it ended
        view = status()
        assert (view["state"], view["counts"]["succeeded"], view["counts"]["pending"]) == ("aborted", 1, 2)
        code, _, err = cli(capsys, "fleet", "rollback", fid, "--yes", *journal, "-o", "json")
        assert code == 0, err
        view = status()
        assert (view["state"], view["counts"]["rolled_back"], view["counts"]["pending"]) == ("rolled back", 1, 2)
        assert _pages(base, headers, fid) == ("rolled back", {"pending": 2, "rolled_back": 1}, "rolled back",
                                              {"pending": 2, "rolled_back": 1})
        assert [s["stage"] for s in view["stages"]] == ["canary", "rest"]
        assert view["stages"][0]["state"] == "aborted"  # its bake was cut short; nothing says it still bakes
    finally:
        run.stop()
        dash.terminate()
        dash.wait(10)


# ------------------------------------------------------------------------------------------------ approvals
def test_stages_wait_for_approval_from_the_cli_and_an_approval_may_come_ahead(emu, tmp_path, capsys):
    """A canary approved before it starts and again after its bake, the pilot approved ahead of time (while the
    fleet waited for the canary's second approval): each decision recorded with who made it."""
    emu.create_sets({(0, "approve-a"): ["web"], (0, "approve-b"): ["web"], (0, "approve-c"): ["web"]}, 2)
    stages = ('[[stages]]\nname = "canary"\nsets = ["approve-a/web"]\napprove = true\napprove_after = true\n'
              'bake = "10m"\n[[stages]]\nname = "pilot"\nsets = ["approve-b/web"]\napprove = true\n'
              '[[stages]]\nname = "rest"\n')
    (tmp_path / "fleet.toml").write_text(fleet_file("approve-*", NEW, stages))
    journal = ["--journal", str(tmp_path / "journal.sqlite"), "-o", "json"]
    run = Background("fleet", "run", str(tmp_path / "fleet.toml"), "--yes", *flags(emu, tmp_path))
    try:
        fid = run.until("fleet")["fleet"]
        run.until("approval_waiting", stage="canary", when="before")
        code, out, err = cli(capsys, "fleet", "status", fid, *journal)
        assert out[-1]["state"] == "waiting" and out[-1]["waiting"]["stage"] == "canary", err
        assert out[-1]["counts"]["pending"] == 3  # nothing started before the approval
        code, out, err = cli(capsys, "fleet", "approve", fid, *journal)
        assert code == 0 and out[0]["stage"] == "canary" and "@" in out[0]["by"], err
        approved = run.until("stage_approved", stage="canary")
        assert approved["by"] == out[0]["by"] and approved["when"] == "before"
        run.until("approval_waiting", stage="canary", when="after")
        code, out, err = cli(capsys, "fleet", "approve", fid, "--stage", "pilot", *journal)
        assert code == 0 and out[0]["when"] is None, err  # ahead of time
        code, out, err = cli(capsys, "fleet", "approve", fid, "--stage", "rest", *journal)
        assert code == 2 and "asks for no approval" in err
        code, out, err = cli(capsys, "fleet", "approve", fid, *journal)
        assert code == 0 and out[0]["when"] == "after", err
        assert run.finish() == 0, run.proc.stderr.read()[-2000:] if run.proc.stderr else ""
        kinds = [(e["type"], e.get("stage")) for e in run.events if e["type"] in (
            "approval_waiting", "stage_approved", "stage_started")]
        assert kinds == [("approval_waiting", "canary"), ("stage_approved", "canary"), ("stage_started", "canary"),
                         ("approval_waiting", "canary"), ("stage_approved", "canary"),
                         ("approval_waiting", "pilot"), ("stage_approved", "pilot"), ("stage_started", "pilot"),
                         ("stage_started", "rest")]
        view = run.events[-1]
        assert view["state"] == "succeeded" and view["counts"]["succeeded"] == 3
        assert [len(s["approvals"]) for s in view["stages"]] == [2, 1, 0]
    finally:
        run.stop()


def test_a_rejected_stage_halts_the_fleet_with_the_reason(emu, tmp_path, capsys):
    emu.create_sets({(0, "reject-a"): ["web"]}, 2)
    stages = '[[stages]]\nname = "prod"\napprove = true\n'
    (tmp_path / "fleet.toml").write_text(fleet_file("reject-*", NEW, stages))
    t0 = emu.now()
    run = Background("fleet", "run", str(tmp_path / "fleet.toml"), "--yes", *flags(emu, tmp_path))
    try:
        fid = run.until("fleet")["fleet"]
        run.until("approval_waiting")
        journal = ["--journal", str(tmp_path / "journal.sqlite"), "-o", "json"]
        code, _, err = cli(capsys, "fleet", "reject", fid, "--reason", "error budget spent this week", *journal)
        assert code == 0, err
        assert run.finish() == 1
        view = run.events[-1]
        assert view["state"] == "halted" and "error budget spent this week" in view["reason"]
        assert view["counts"]["pending"] == 1 and view["stages"][0]["state"] == "rejected"
        assert not upgrades(emu, t0).get("reject-a/web")  # nothing was touched
        code, _, err = cli(capsys, "fleet", "approve", fid, *journal)
        assert code == 2 and "halted" in err
    finally:
        run.stop()


# --------------------------------------------------------------------------------------------- bad inputs
BAD_FILES = [
    ('name = "x"\n[target]\nversion = "1.2.3"\n[[stages]]\nname = "a"\n[[stages]]\nname = "A"\n', "two stages"),
    ('name = "\\u001b[2Jx"\n[target]\nversion = "1.2.3"\n', "control characters"),
    ('[target]\nversion = "1.2.3"\n[[stages]]\nname = "a\\u0007"\n', "control characters"),
    ('[target]\nversion = "1.2.3"\n[[stages]]\napprove = "yes"\n', "true or false"),
    ('[target]\nversion = "1.2.3"\n[[stages]]\nsets = ["nosuch/rg/web"]\n', "subscription-id"),
    ("x = " + "[" * 20000 + "]" * 20000 + "\n", "too deeply"),
    ('[target]\nversion = "1.2.3"\n[policy]\nwindows = ["daily 01:00-02:00\\n"]\n', "DAYS HH:MM"),
    ('[target]\nversion = "1.2.3"\n[policy]\nwindows = ["Mon \u0661\u0660:00-11:00"]\n', "DAYS HH:MM"),
    ('[target]\nversion = "1.2.3"\n[policy]\nwindows = ["Mon 10:00-10:00"]\n', "starts when it ends"),
]


@pytest.mark.parametrize(("text", "needle"), BAD_FILES)
def test_a_bad_fleet_file_is_one_line_and_exit_2(tmp_path, capsys, text, needle):
    (tmp_path / "f.toml").write_text(text)
    code, _, err = cli(capsys, "fleet", "plan", str(tmp_path / "f.toml"), "--subscription",
                       "00000000-0000-0000-0000-000000000001", "--journal", str(tmp_path / "j.sqlite"))
    assert code == 2 and needle in err and err.count("\n") == 1 and "\x1b" not in err, err


def test_confirmation_limits_and_a_full_fleet_refused_with_nothing_written(emu, tmp_path, capsys):
    """`fleet run` and `rollout rollback` ask before they change anything (no terminal, no --yes: refused, exit 2,
    nothing recorded); a fleet selecting more sets than --max-sets is refused with the flag that raises it."""
    emu.create_sets({(0, "many-a"): ["web", "api", "jobs"]}, 2)
    (tmp_path / "fleet.toml").write_text(fleet_file("many-*"))
    before = emu.stats()["requests"]["byOperation"]
    code, _, err = cli(capsys, "fleet", "run", str(tmp_path / "fleet.toml"), *flags(emu, tmp_path))
    assert code == 2 and "without confirmation: pass --yes" in err
    code, _, err = cli(capsys, "fleet", "run", str(tmp_path / "fleet.toml"), "--yes", "--max-sets", "2",
                       *flags(emu, tmp_path))
    assert code == 2 and "selects 3 scale sets, more than 2" in err and "--max-sets 3" in err
    code, _, err = cli(capsys, "fleet", "plan", str(tmp_path / "fleet.toml"), "--max-sets", "0", *flags(emu, tmp_path))
    assert code == 2 and "--max-sets" in err
    after = emu.stats()["requests"]["byOperation"]
    writes = [k for k in after if after[k] != before.get(k) and not k.endswith(("_Get", "_List", "_ListAll"))]
    assert not writes, writes
    fleets = tmp_path / "fleets.sqlite"
    assert not fleets.exists() or not sqlite3.connect(fleets).execute(
        "SELECT count(*) FROM sqlite_master WHERE name = 'workflow_status'").fetchone()[0] or \
        not sqlite3.connect(fleets).execute("SELECT count(*) FROM workflow_status").fetchone()[0]
    code, said = _on_a_terminal(["fleet", "run", str(tmp_path / "fleet.toml"), *flags(emu, tmp_path)[:-2]], b"n")
    assert code == 3 and "Run fleet 'ops'? [y/N]" in said and "nothing changed" in said, said
    assert "many-a/web" in said and "3 scale set(s) in 1 stage(s)" in said  # the plan it asked about
    # (a health timeout of 2 simulated hours: 3 real seconds at 2,400x, so a loaded machine's pause is not a failure)
    code, events, err = cli(capsys, "upgrade", "-g", "many-a", "-n", "web", "--version", NEW, "--yes",
                            "--health-timeout", "2h", *flags(emu, tmp_path))
    assert code == 0, (err, events[-3:])
    rid = events[-1]["rollout"]
    code, _, err = cli(capsys, "rollout", "rollback", rid, *flags(emu, tmp_path))
    assert code == 2 and "without confirmation: pass --yes" in err


def _on_a_terminal(args: list[str], reply: bytes) -> tuple[int, str]:
    """Run vmssctl on a pseudo-terminal, answer its question with ``reply``; (exit code, what it printed)."""
    import os
    import pty
    import time

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "vmssctl", *args], stdin=slave, stdout=slave, stderr=slave,
                            close_fds=True)
    os.close(slave)
    out, deadline = b"", time.monotonic() + 60
    try:
        while b"[y/N]" not in out and time.monotonic() < deadline:
            out += os.read(master, 4096)
        os.write(master, reply + b"\n")
        with contextlib.suppress(OSError):  # EIO once the process has closed the terminal
            while chunk := os.read(master, 4096):
                out += chunk
    finally:
        os.close(master)
    return proc.wait(60), out.decode(errors="replace")


def test_a_broken_environment_is_one_clear_line(tmp_path, capsys):
    """An unreachable or missing database, a damaged journal page: each one line naming the file or database and
    what to do, exit 2, never an internal error."""
    sub = ["--subscription", "00000000-0000-0000-0000-000000000001"]
    env_wait = {"VMSSCTL_DB_WAIT": "0"}
    code, _, err = _cli_env(capsys, env_wait, "fleet", "status", "f-000000000000", "--database",
                            "postgresql://nobody@127.0.0.1:1/x", *sub)
    assert code == 2 and "cannot reach" in err and "internal error" not in err, err
    code, _, err = cli(capsys, "fleet", "list", "--database", f"sqlite:///{tmp_path}/no/such/dir/f.sqlite", *sub,
                       "--journal", str(tmp_path / "j.sqlite"))
    assert code == 2 and "directory" in err and "internal error" not in err, err
    code, _, err = cli(capsys, "rollout", "list", "--journal", str(tmp_path / "j.sqlite"))
    assert code == 0, err
    damaged = tmp_path / "damaged.sqlite"
    from vmssctl.rollout.journal import Journal

    j = Journal(damaged)
    j.create("00000000-0000-0000-0000-000000000001", "rg", "web", None, {}, {}, {})
    j.close()
    db = sqlite3.connect(damaged)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'rollouts'").fetchone()[0]
    size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    data = bytearray(damaged.read_bytes())
    data[(page - 1) * size:page * size] = b"\xff" * size  # the rollouts' page, garbage
    damaged.write_bytes(bytes(data))
    code, _, err = cli(capsys, "rollout", "list", "--journal", str(damaged))
    assert code == 2 and str(damaged) in err and "damaged" in err and "move it aside" in err, err


def _cli_env(capsys, env: dict, *args: str):
    import os

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return cli(capsys, *args)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (root in this sandbox may mount one): to fill up, or to remount read-only."""
    where = tmp_path / "disk"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_full_or_read_only_disk_under_the_journal_is_one_clear_line(small_disk):
    """The journal on a disk remounted read-only, then on a full one: one line naming the file and what to do."""
    journal = small_disk / "journal.sqlite"

    def vmssctl(*args: str) -> subprocess.CompletedProcess:  # a process of its own: nothing stays open on the disk
        return subprocess.run([sys.executable, "-m", "vmssctl", *args, "--journal", str(journal)],
                              capture_output=True, text=True, timeout=60)
    assert vmssctl("rollout", "list").returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    r = vmssctl("rollout", "list")
    assert r.returncode == 2 and str(journal) in r.stderr and "read-only" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "internal error" not in r.stderr
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    from vmssctl.rollout.journal import Journal
    from vmssctl.storage import StorageError

    j = Journal(journal)
    with contextlib.suppress(OSError), (small_disk / "filler").open("wb", buffering=0) as filler:
        while True:  # until the disk is full
            filler.write(b"\0" * 4096)
    with pytest.raises(StorageError) as e:
        for n in range(200):
            j.add_event("r-1", float(n), "x", {"pad": "y" * 4000})
    assert "disk is full" in str(e.value) and str(journal) in str(e.value) and e.value.exit_code == 2
    (small_disk / "filler").unlink()
    j.close()


def test_latest_is_one_version_for_the_whole_fleet_published_in_all_its_regions(emu, tmp_path, capsys):
    """``version = "latest"``: a version published in one of the fleet's regions only is not what 'latest' means
    for the fleet; the plan says the one version every set will get, and the run gives every set that one."""
    from vmssctl.emulator.server import demo_scale_set

    emu.create_sets({(0, "pin-0"): ["web"]}, 2)
    with emu.http() as h:  # and one in another region
        h.put(f"/subscriptions/{emu.info['subscriptions'][0]}/resourcegroups/pin-1",
              params={"api-version": "2022-09-01"}, json={"location": "westeurope"}).raise_for_status()
    emu.clients()[0].virtual_machine_scale_sets.begin_create_or_update(
        "pin-1", "web", {**demo_scale_set(2), "location": "westeurope"}, polling=False)
    emu.admin("POST", "clock", {"advance": 900})
    only_east = "24.04.202612777"
    emu.admin("POST", "images", {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server",
                                 "version": only_east, "locations": ["eastus"]})
    (tmp_path / "fleet.toml").write_text(fleet_file("pin-*", version="latest"))
    code, out, err = cli(capsys, "fleet", "plan", str(tmp_path / "fleet.toml"), *flags(emu, tmp_path))
    assert code == 0, err
    said = out[-1]["latest"]
    assert "for every set" in said and "eastus, westeurope" in said and only_east not in said, said
    pinned = said.split("'latest' is ")[1].split(" ")[0]
    code, events, err = cli(capsys, "fleet", "run", str(tmp_path / "fleet.toml"), "--yes", *flags(emu, tmp_path))
    assert code == 0, err
    versions = {e["version"] for e in events if e.get("type") == "version_pinned"}
    assert versions == {pinned}
    sets = emu.stats()["scaleSets"]
    assert sets["pin-0/web"]["healthy"] == sets["pin-1/web"]["healthy"] == 2

