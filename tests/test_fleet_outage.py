"""Fleets on real PostgreSQL, as production runs them: several workers share a fleet; one dies; the database goes
away and comes back (restarts are routine: a minor upgrade, a managed server's failover). Workers, the `fleet
run` watcher, `fleet status` and the dashboard wait and carry on; the dead worker's sets are resumed by exactly
one live worker, and no live worker is ever taken for dead.

PostgreSQL from Debian's package, stopped with ``pg_ctl -m immediate`` (every connection cut, as in a crash)
while the workers are idle and while the pilot stage runs (each until every worker has noticed), and for 20 s while
the last stage runs (three times the takeover window, ten times the reconnect backoff's longest step: how long a
worker's own heartbeats lapse is what that part tests, so it is real time by nature); the rollouts' time is the
emulator's clock.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import Background, PostgresMissing, start_emulator, start_workers, throwaway_postgres
from vmssctl import durable
from vmssctl.rollout.journal import Journal

NEW = "24.04.202611200"


@pytest.fixture
def pg():
    try:
        with throwaway_postgres() as cluster:
            yield cluster
    except PostgresMissing as e:
        if os.environ.get("CI"):
            pytest.fail(str(e))
        pytest.skip(str(e))


def test_workers_share_a_fleet_ride_out_restarts_and_take_over_a_dead_one(pg, tmp_path):
    emu = start_emulator(tmp_path / "emu", "--time-scale", "600", "--subscriptions", "2")  # default throttle
    workers, dash, fleet = [], None, None
    try:
        subs = emu.info["subscriptions"]
        sets = [(i % 2, f"out-{i:02d}") for i in range(14)]
        emu.create_sets({(sub, rg): ["web"] for sub, rg in sets}, 2)
        (tmp_path / "fleet.toml").write_text(f'''
[target]
version = "{NEW}"
[select]
subscriptions = {json.dumps(subs)}
resource_groups = ["out-*"]
[policy]
batch_percent = 50
health_timeout = "1h"          # 6 real seconds at 600x: a loaded machine pausing a worker is not a bad image
poll = "30s"                  # fewer looks a set: the workers share one request budget in real time
[[stages]]
name = "canary"
sets = ["out-00/web"]
[[stages]]
name = "pilot"
match = "out-0[1-3]/*"
concurrency = 3
[[stages]]
name = "rest"
concurrency = 5
''')
        workers = start_workers(pg.url, tmp_path, 3)
        # a restart while the workers have nothing to do: they wait for the database and keep going
        pg.stop()
        for w in workers:
            w.wait_for("is unreachable")
        pg.start()
        for w in workers:
            w.wait_for("the database is back")
        token = tmp_path / "token"
        dash = subprocess.Popen([sys.executable, "-m", "vmssctl", "dashboard", "--emulator", str(emu.state_dir),
                                 "--database", pg.url, "--journal", pg.url, "--token-file", str(token)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        base = re.search(r"(http://127\.0\.0\.1:\d+)/", dash.stdout.readline() if dash.stdout else "")
        assert base, "the dashboard did not start"
        api = httpx.Client(base_url=base.group(1), headers={"Authorization": f"Bearer {token.read_text()}"},
                           timeout=60)
        t0 = emu.now()
        fleet = Background("fleet", "run", str(tmp_path / "fleet.toml"), "--yes", "--database", pg.url,
                           "--emulator", str(emu.state_dir), "-o", "json")
        fid = fleet.until("fleet")["fleet"]
        fleet.until("stage_started", stage="pilot")  # down while the pilot's sets roll out, until every worker
        seen = [w.said().count("is unreachable") for w in workers]  # has noticed (its heartbeat failed)
        pg.stop()
        for w, before in zip(workers, seen, strict=True):
            w.wait_for("is unreachable", times=before + 1)
        pg.start()
        fleet.until("stage_started", stage="rest")
        victim = _driving(pg.url, [w.proc for w in workers])  # a worker driving a rollout of the last stage dies...
        workers[victim].proc.send_signal(signal.SIGKILL)
        workers[victim].proc.wait(10)
        # ... and the database goes down; when it comes back it holds what an outage longer than the takeover
        # window (6 s) leaves: every heartbeat 20 s old, the survivors' too (aged on the database's own clock, not
        # waited for in real time), so a survivor must not take a peer over before it has watched for the window
        _age_heartbeats(pg.url, 20)
        pg.stop()
        status = subprocess.Popen([sys.executable, "-m", "vmssctl", "fleet", "status", fid, "--database", pg.url,
                                   "-o", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "VMSSCTL_DB_WAIT": "300"})
        page = api.get(f"/fleets/{fid}")
        assert page.status_code == 200 and "Cannot show the fleet" in page.text and 'http-equiv="refresh"' in page.text
        pg.start()
        out, err = status.communicate(timeout=120)  # it waited for the database, then answered
        assert status.returncode == 0 and '"type": "fleet_view"' in out and "internal error" not in err, err
        code = fleet.finish(300)
        views = [e for e in fleet.events if e.get("type") == "fleet_view"]
        failed = [s for s in (views[-1].get("sets") or []) if s.get("state") != "succeeded"] if views else []
        assert code == 0, (failed, [{k: v for k, v in e.items() if k != "view"} for e in fleet.events[-8:]],
                           fleet.proc.stderr.read()[-2000:] if fleet.proc.stderr else "")
        view = fleet.events[-1]
        assert view["state"] == "succeeded" and view["counts"]["succeeded"] == 14, view
        page = api.get(f"/fleets/{fid}").text  # the dashboard reads again once the database is back
        assert 'data-state="succeeded"' in page and "Cannot show" not in page
        api.close()
        stats = emu.stats(since=t0)
        for _, rg in sets:  # every set on the new image, each instance upgraded once, never below the floor
            record = stats["scaleSets"][f"{rg}/web"]
            assert set(record["upgrades"].values()) == {1} and len(record["upgrades"]) == 2, (rg, record)
            assert record["minHealthy"] >= 1, (rg, record)
        assert stats["requests"].get("throttled", 0) == 0  # the workers shared each subscription's budget
        journal = Journal(pg.url)  # the dead worker's rollouts were resumed elsewhere, from the shared journal
        rollouts = journal.recent(100)
        assert len(rollouts) == 14 and any(any(e["type"] == "rollout_resumed" for e in journal.events(r.id))
                                           for r in rollouts)
        c = durable.client(pg.url)  # the fleet's stored input names the journal, without the database's URL
        assert c.list_workflows(workflow_ids=[fid], load_input=True)[0].input["args"][3] == durable.THIS_DATABASE
        c.destroy()
        live = [w for n, w in enumerate(workers) if n != victim]
        said = "".join(w.said() for w in live)
        assert said.count(f"took over worker w{victim}") == 1, said  # exactly one survivor took the dead one over
        for w in live:  # the others still run, with their identity: nobody took a live worker for dead
            assert w.proc.poll() is None, w.said()[-2000:]
            assert "took over worker w" not in w.said().replace(f"took over worker w{victim}", "")
            assert "internal error" not in w.said() and w.said().count("the database is back") >= 2, w.said()[-3000:]
        ran = re.findall(rf"fleet {re.escape(fid)}: (\S+) (started|succeeded)", "".join(w.said() for w in workers))
        assert {k for k, what in ran if what == "succeeded"} == {f"{subs[s]}/{rg}/web" for s, rg in sets}, ran
    finally:
        if fleet is not None:
            fleet.stop()
        if dash is not None:
            dash.terminate()
            dash.wait(10)
        for w in workers:
            w.stop()
        emu.stop()


def _age_heartbeats(database: str, seconds: float) -> None:
    """Every worker's last heartbeat ``seconds`` older, as the database would hold them after that long an outage."""
    from vmssctl.fleet.worker import engine_for

    engine = engine_for(database)
    try:
        import sqlalchemy as sa

        with engine.begin() as db:
            db.execute(sa.text("UPDATE vmssctl_workers SET beat = beat - :s"), {"s": seconds})
    finally:
        engine.dispose()


def _driving(database: str, workers: list, seconds: float = 30) -> int:
    """The index of a worker that drives a set's rollout right now (it holds the set's claim in the journal)."""
    from vmssctl.rollout import claim

    journal, deadline = Journal(database), time.monotonic() + seconds
    try:
        rows = []
        while time.monotonic() < deadline:
            rows = journal.db.execute("SELECT scale_set, pid FROM claims").fetchall()
            for row in rows:
                if claim.holder(journal, row["scale_set"]) is not None:
                    for n, w in enumerate(workers):
                        if w.pid == row["pid"]:
                            return n
            time.sleep(0.01)
        raise AssertionError(f"no worker drives a rollout: claims {rows}, workers {[w.pid for w in workers]}, "
                             f"rollouts {[(r.id, r.state) for r in journal.recent(100)]}")
    finally:
        journal.close()
