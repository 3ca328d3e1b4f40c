"""Crash safety: SIGKILL a real vmssctl process at several points, then resume; nothing is upgraded twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tests.helpers import NEW, OLD, instances, make_set, record, run, run_and_kill, upgrade_args


# A real kill -9 of the process at two points; every other point of a turn is crashed in-process (test_engine's
# crash matrix, milliseconds each, the same resume path).
@pytest.mark.parametrize("kill_at, nth", [("model_updated", 1), ("batch_started", 2)])
def test_kill_and_rerun_finishes_without_upgrading_twice(frozen, tmp_path, kill_at, nth):
    rg = make_set(frozen, 8)
    t0 = frozen.now()
    journal = tmp_path / "journal.sqlite"
    args = upgrade_args(frozen, rg, journal, "--version", NEW, "--batch-size", "2")
    run_and_kill(args, kill_at, nth)
    code, events, err = run(args)  # re-running the same command resumes the rollout
    assert code == 0, err
    assert events[-1]["type"] == "rollout_succeeded"
    insts = instances(frozen, rg)
    assert all(i.latest_model and i.healthy and i.image.exact_version == NEW for i in insts)
    rec = record(frozen, rg, t0)
    assert rec["upgrades"] == {str(i): 1 for i in range(8)}
    assert rec["minHealthy"] >= 6
    # the rollout is one DBOS workflow in the set's database: the run again was DBOS recovering it, not a second run
    runs = workflows(journal, events[-1]["rollout"])
    assert [(w.workflow_id, w.status) for w in runs] == [(events[-1]["rollout"], "SUCCESS")]
    assert runs[0].recovery_attempts == (1 if kill_at == "plan" else 2)


def workflows(journal, rid: str) -> list:
    """The DBOS workflows in the database of the scale set ``rid`` upgrades."""
    from vmssctl import durable
    from vmssctl.rollout.journal import Journal
    from vmssctl.rollout.workflow import database

    j = Journal(journal)
    c = durable.client(database(j, j.get(rid)))
    try:
        return c.list_workflows()
    finally:
        c.destroy()


def test_kill_during_rollback_then_rollout_resume(frozen, tmp_path):
    rg = make_set(frozen, 6)
    t0 = frozen.now()
    journal = tmp_path / "journal.sqlite"
    with frozen.fault("unhealthy", version="5.5.5"):
        seen = run_and_kill(upgrade_args(frozen, rg, journal, "--version", "5.5.5", "--batch-size", "2",
                                         "--rollback", "auto", "--health-timeout", "4m"), "batch_started", 2)
        assert seen[-1]["phase"] == "rollback"
        rid = seen[-1]["rollout"]
        code, events, err = run([sys.executable, "-m", "vmssctl", "rollout", "resume", rid, "--journal",
                                 str(journal), "--emulator", str(frozen.state_dir), "-o", "json"])
    assert code == 1 and events[-1]["type"] == "rollout_rolled_back", err
    assert "HealthState/unhealthy" in events[-1]["error"]
    insts = instances(frozen, rg)
    assert all(i.healthy and i.latest_model and i.image.exact_version == OLD for i in insts)
    assert record(frozen, rg, t0)["upgrades"] == {"0": 2, "1": 2}  # forward once, back once, no more


def test_manual_rollback_of_a_finished_rollout(frozen, tmp_path):
    rg = make_set(frozen, 4)
    journal = tmp_path / "journal.sqlite"
    code, events, err = run(upgrade_args(frozen, rg, journal, "--version", NEW, "--batch-size", "2"))
    assert code == 0, err
    rid = events[-1]["rollout"]
    code, events, err = run([sys.executable, "-m", "vmssctl", "rollout", "rollback", rid, "--journal",
                             str(journal), "--emulator", str(frozen.state_dir), "-o", "json", "--yes"])
    assert code == 0 and events[-1]["type"] == "rollout_rolled_back", err
    assert {i.image.exact_version for i in instances(frozen, rg)} == {OLD}


def test_a_second_rollout_is_refused_while_one_holds_the_set(frozen, tmp_path):
    rg = make_set(frozen, 4)
    journal = tmp_path / "journal.sqlite"
    seen = run_and_kill(upgrade_args(frozen, rg, journal, "--version", NEW), "batch_started", 2)
    before = frozen.stats()["requests"]["writes"]
    code, _, err = run(upgrade_args(frozen, rg, journal, "--version", "24.04.202612010"))
    assert code == 2 and f"rollout {seen[-1]['rollout']}" in err and len(err.strip().splitlines()) == 1
    assert frozen.stats()["requests"]["writes"] == before
    # the same command again is a resume
    code, events, err = run(upgrade_args(frozen, rg, journal, "--version", NEW))
    assert code == 0, err
    assert events[0]["resume"] == seen[-1]["rollout"]


def test_abort_and_pause_of_an_interrupted_rollout(frozen, tmp_path):
    rg = make_set(frozen, 4)
    journal = tmp_path / "journal.sqlite"
    seen = run_and_kill(upgrade_args(frozen, rg, journal, "--version", NEW), "batch_succeeded", 1)
    rid = seen[-1]["rollout"]
    base = [sys.executable, "-m", "vmssctl", "rollout"]
    code, events, err = run([*base, "pause", rid, "--journal", str(journal), "-o", "json"])
    assert code == 0 and events[0]["type"] == "pause"
    code, events, err = run([*base, "resume", rid, "--journal", str(journal), "--emulator", str(frozen.state_dir),
                             "-o", "json"])
    assert code == 0 and events[-1]["type"] == "rollout_succeeded", err
    code, events, err = run([*base, "abort", rid, "--journal", str(journal)])
    assert code == 2 and "succeeded" in err
    assert all(i.latest_model for i in instances(frozen, rg))


def test_a_rollout_running_elsewhere_is_not_taken_over(frozen, tmp_path, capsys):
    from vmssctl.cli import main
    from vmssctl.rollout import claim
    from vmssctl.rollout.journal import Journal

    rg = make_set(frozen, 2)
    journal = Journal(tmp_path / "journal.sqlite")
    r = journal.create(frozen.subscription, rg, "web", frozen.endpoint, {"publisher": "Canonical", "offer":
                       "ubuntu-24_04-lts", "sku": "server", "version": NEW}, {}, {})
    held = claim.take(journal, r.scale_set, r.id)  # this (live) process drives it, as vmssctl would
    before = frozen.stats()["requests"]["writes"]
    code = main(["upgrade", "-g", rg, "-n", "web", "--emulator", str(frozen.state_dir), "--journal",
                 str(tmp_path / "journal.sqlite"), "--version", NEW, "--yes"])
    err = capsys.readouterr().err
    held.release()
    assert code == 2 and "another vmssctl process" in err
    assert frozen.stats()["requests"]["writes"] == before


def test_ctrl_c_of_a_recovered_rollout_stops_it_at_once_and_a_run_again_finishes_it(frozen, tmp_path):
    """Run again after a kill -9, DBOS drives the recovered rollout in its own thread: Ctrl-C still ends the
    process at once (it does not wait for that thread to finish the rollout), as a crash would, and says how to
    carry on; running the command again finishes the job, every instance upgraded once."""
    rg = make_set(frozen, 6)
    t0 = frozen.now()
    journal = tmp_path / "journal.sqlite"
    args = upgrade_args(frozen, rg, journal, "--version", NEW, "--batch-size", "2")
    run_and_kill(args, "batch_started", 1)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line)["type"] == "batch_started":
            proc.send_signal(signal.SIGINT)
            break
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err
    assert "interrupted: rollout" in err and "rollout resume" in err and "Traceback" not in err
    code, events, err = run(args)
    assert code == 0 and events[-1]["type"] == "rollout_succeeded", err
    assert record(frozen, rg, t0)["upgrades"] == {str(i): 1 for i in range(6)}
