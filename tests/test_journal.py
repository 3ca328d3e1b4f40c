"""The journal and the claim on a scale set, the same on both backends: a SQLite file and real PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import pytest

from vmssctl.errors import UsageError
from vmssctl.rollout import claim
from vmssctl.rollout.journal import Journal, without_password

SUB = "00000000-0000-0000-0000-00000000feed"
WHEN = 1795719929.9551568  # epoch seconds as the engine records them: every digit must come back


@pytest.fixture(params=["sqlite", "postgresql"])
def journal(request, tmp_path):
    j = Journal(tmp_path / "journal.sqlite" if request.param == "sqlite" else request.getfixturevalue("postgres"))
    yield j
    j.close()


def make(j: Journal):
    return j.create(SUB, "rg", "web", None, {"version": "2"}, {"version": "1"}, {"canary": 1},
                    {"emulator": "/tmp/emu", "subscription": SUB})


def test_a_rollout_its_batches_and_events_round_trip(journal):
    r = make(journal)
    assert (r.state, r.phase, r.target, r.previous, r.connection) == (
        "running", "model", {"version": "2"}, {"version": "1"}, {"emulator": "/tmp/emu", "subscription": SUB})
    assert journal.active_for(r.scale_set).id == r.id and journal.recent()[0].id == r.id
    journal.observed(r.id, WHEN, {"done": 3})
    journal.update(r.id, canary_done=1, requested="pause")
    again = journal.get(r.id)
    assert (again.seen, again.progress, again.canary_done, again.requested) == (WHEN, {"done": 3}, True, "pause")
    first = journal.add_batch(r.id, "forward", ["0", "1"], WHEN, {"watermark": "1"})
    second = journal.add_batch(r.id, "forward", ["2"], WHEN + 1)
    journal.set_batch(first, state="failed", finished=WHEN + 2, failed=["1"])
    assert [(b.seq, b.instance_ids, b.state, b.failed, b.meta, b.finished) for b in journal.batches(r.id)] == [
        (1, ["0", "1"], "failed", ["1"], {"watermark": "1"}, WHEN + 2), (2, ["2"], "issuing", [], {}, None)]
    assert second.seq == 2
    ids = [journal.add_event(r.id, WHEN + k, kind, {"n": k}) for k, kind in enumerate(("plan", "batch_started"))]
    assert ids[1] > ids[0]
    assert journal.events(r.id) == [{"id": ids[0], "rollout": r.id, "time": WHEN, "type": "plan", "n": 0},
                                    {"id": ids[1], "rollout": r.id, "time": WHEN + 1, "type": "batch_started", "n": 1}]
    assert journal.events(r.id, after=ids[0])[0]["type"] == "batch_started"
    journal.update(r.id, state="succeeded")
    assert journal.active_for(r.scale_set) is None
    with pytest.raises(UsageError, match="no rollout 'r-none'"):
        journal.get("r-none")


def test_a_claim_is_seen_from_another_connection_and_refuses_a_second_holder(journal):
    r = make(journal)
    other = Journal(journal.location)
    try:
        assert claim.holder(other, r.scale_set) is None and not claim.running(other, r)
        held = claim.take(journal, r.scale_set, r.id)
        assert claim.holder(other, r.scale_set) == r.id and claim.running(other, r)
        with pytest.raises(UsageError, match=f"rollout {r.id} is being run by process {os.getpid()}"):
            claim.take(other, r.scale_set, r.id)
        held.release()
        assert claim.holder(other, r.scale_set) is None
        claim.take(other, r.scale_set, r.id).release()  # free again for the next one
    finally:
        other.close()


def test_a_claim_dies_with_its_process(journal):
    """kill -9 of the holder frees the set at once: no expiry to wait for, no pid to trust."""
    r = make(journal)
    code = ("import sys\nfrom vmssctl.rollout import claim\nfrom vmssctl.rollout.journal import Journal\n"
            "j = Journal(sys.argv[1]); c = claim.take(j, sys.argv[2], sys.argv[3]); print('held', flush=True)\n"
            "sys.stdin.read()\n")  # holds until killed (its stdin stays open)
    proc = subprocess.Popen([sys.executable, "-c", code, journal.location, r.scale_set, r.id],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    assert claim.holder(journal, r.scale_set) == r.id
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    if journal.url:  # PostgreSQL ends the session once it sees the socket closed: wait for that on the lock itself
        journal.db.execute("SET lock_timeout = '10s'")
        journal.db.execute("SELECT pg_advisory_lock_shared(%s)", (claim._pg_key(r.scale_set),))
        journal.db.execute("SELECT pg_advisory_unlock_shared(%s)", (claim._pg_key(r.scale_set),))
        journal.db.execute("RESET lock_timeout")
    assert claim.holder(journal, r.scale_set) is None
    claim.take(journal, r.scale_set, r.id).release()


def test_a_claim_is_not_lost_with_the_files_beside_the_journal(journal):
    """Deleting claims/ (or anything else beside the journal) while a rollout runs does not free its set: the
    lock is a byte of the journal file itself. A lost PostgreSQL session is taken again by ``check``."""
    import shutil

    r = make(journal)
    held = claim.take(journal, r.scale_set, r.id)
    other = Journal(journal.location)
    try:
        if journal.path is not None:
            shutil.rmtree(journal.path.parent / "claims", ignore_errors=True)
        else:  # PostgreSQL: the session holding the lock is cut; the next check takes the lock again on a new one
            session = claim._sessions[journal.url]
            other.db.execute("SELECT pg_terminate_backend(%s)", (session.info.backend_pid,))
            held.check()
        assert claim.holder(other, r.scale_set) is not None
        with pytest.raises(UsageError, match="is being run by process"):
            claim.take(other, r.scale_set, r.id)
        held.check()
    finally:
        held.release()
        other.close()
    claim.take(journal, r.scale_set, r.id).release()


def test_claims_never_close_a_descriptor_of_the_journal_file(tmp_path, monkeypatch):
    """Closing any descriptor of a file drops every POSIX lock the process holds on it, SQLite's own among them:
    taking, probing and letting go of claims on a SQLite journal never closes one."""
    journal = Journal(tmp_path / "journal.sqlite")
    closed: list[str] = []
    real_close = os.close

    def close(fd: int) -> None:
        with contextlib.suppress(OSError):
            closed.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_close(fd)
    monkeypatch.setattr(os, "close", close)
    r = make(journal)
    for _ in range(3):
        held = claim.take(journal, r.scale_set, r.id)
        assert claim.holder(journal, r.scale_set) == r.id
        held.check()
        held.release()
        assert claim.holder(journal, r.scale_set) is None
    assert str(journal.path) not in closed, closed
    journal.close()


@pytest.mark.parametrize("given, written", [
    ("postgresql://vmssctl:s3cret@db.internal:5432/vmssctl", "postgresql://vmssctl@db.internal:5432/vmssctl"),
    ("postgresql://:s3cret@db/x", "postgresql://db/x"),
    ("postgresql://vmssctl@db/x?sslmode=require", "postgresql://vmssctl@db/x?sslmode=require"),
    ("/home/me/journal.sqlite", "/home/me/journal.sqlite"),
])
def test_a_journal_url_is_written_down_without_its_password(given, written):
    assert without_password(given) == written


def test_the_database_keeps_one_active_rollout_per_set(journal):
    """Two processes that both passed the checks before a start cannot both record a rollout of one set; a rollback
    of a finished one waits until no other is active."""
    first = make(journal)
    other = Journal(journal.location)
    try:
        with pytest.raises(UsageError, match=f"rollout {first.id} of this scale set is already active"):
            make(other)
        journal.update(first.id, state="succeeded")
        second = make(other)
        with pytest.raises(UsageError, match=f"rollout {second.id} of this scale set is already active"):
            journal.update(first.id, state="rolling_back")
        other.update(second.id, state="aborted")
        journal.update(first.id, state="rolling_back")
        assert journal.active_for(first.scale_set).id == first.id
    finally:
        other.close()


def test_rollout_list_never_cuts_the_id_at_80_columns_and_status_names_the_rollout(tmp_path, capsys):
    from vmssctl import render
    from vmssctl.rollout.events import describe
    from vmssctl.rollout.journal import Journal

    j = Journal(tmp_path / "j.sqlite")
    r = j.create("sub", "a-long-resource-group-name", "a-long-scale-set-name", None,
                 {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "24.04.202611200"},
                 {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "24.04.202610010"},
                 {}, {})
    j.add_event(r.id, 1.0, "rollout_started", {"scaleSet": "a-long-resource-group-name/a-long-scale-set-name",
                                               "from": "a", "to": "b"})
    render.console.cache_clear()
    render.rollouts([r], "table")
    out = capsys.readouterr().out
    assert r.id in out and "…" not in out, out  # the id whole; names and images folded onto more lines, not cut
    assert describe(j.events(r.id)[0]).startswith(f"rollout {r.id} on a-long-resource-group-name/")


def test_instances_fit_80_columns_and_a_flexible_set_has_no_update_domain_column(capsys):
    from vmssctl import render
    from vmssctl.model import ImageRef, Instance

    vm = Instance("flex_1a2b3c4d", None, 0, "1", "running", "succeeded", None, True,
                  ImageRef(publisher="Canonical", offer="ubuntu-24_04-lts", sku="server", version="24.04.202611200"))
    render.console.cache_clear()
    render.instances([vm], "table")
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "flex_1a2b3c4d" in line).split()  # the id whole
    assert row[:4] == ["flex_1a2b3c4d", "0", "1", "current"] and "None" not in out and "UD" not in out, out
    assert row[-1] == "24.04.202611200" and "…" not in out, out  # all of it in 80 columns
