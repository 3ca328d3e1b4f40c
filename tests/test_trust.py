"""Trust: the emulator refuses what ARM refuses and changes nothing when it does; nothing acknowledged is
lost; one rollout per scale set; bad images and foreign model changes stop a rollout fast; every failure is
one line; and every view shows the same numbers."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import start_emulator
from tests.helpers import NEW, instances, make_set, record, run, run_and_kill, upgrade_args

API = {"api-version": "2024-11-01"}
JSON_HEADERS = {"Content-Type": "application/json"}


def set_path(emu, rg: str, name: str = "web") -> str:
    return f"/subscriptions/{emu.subscription}/resourceGroups/{rg}/providers/Microsoft.Compute/" \
           f"virtualMachineScaleSets/{name}"


def changes(emu) -> int:
    return emu.admin("GET", "stats")["stateChanges"]


# ------------------------------------------------------------------ 1. bad input never breaks the emulator
def test_refused_requests_are_arm_errors_and_change_nothing(frozen):
    rg = make_set(frozen, 2)
    path = set_path(frozen, rg)
    before = changes(frozen)
    clock = frozen.now()
    with frozen.http() as h:
        def refused(r, status: int, code: str | None = None) -> None:
            assert r.status_code == status, r.text
            assert r.headers["content-type"].startswith("application/json")
            err = r.json()["error"]
            assert code is None or err["code"] == code, err

        for advance in ("nan", 1e308, -1, True, "5"):
            refused(h.post("/_emulator/clock", json={"advance": advance}), 400)
        refused(h.post("/_emulator/clock", content=b'{"advance": NaN}', headers=JSON_HEADERS), 400)
        refused(h.post("/_emulator/clock", content=b'{"scale": 1e999}', headers=JSON_HEADERS), 400)
        refused(h.put("/_emulator/faults", json={"latencyMs": 1e12}), 400)
        refused(h.put("/_emulator/faults", json={"rules": [{"match": {"version": "1"}, "effect": "slow",
                                                            "factor": 1e300}]}), 400)
        refused(h.put("/_emulator/throttle", json={"limits": ["reads"]}), 400)
        refused(h.patch(path, params=API, json={"tags": ["a", "b"]}), 400, "InvalidRequestContent")
        refused(h.patch(path, params=API, json={"tags": {f"t{i}": "v" for i in range(51)}}), 400, "InvalidTagCount")
        refused(h.patch(path, params=API, json={"tags": {"t": "v" * 257}}), 400, "InvalidTagValueLength")
        refused(h.patch(path, params=API, json={"tags": {"a/b": "v"}}), 400, "InvalidTagNameCharacters")
        refused(h.patch(path, params=API, content=b"[" * 100_000, headers=JSON_HEADERS), 400, "InvalidRequestContent")
        refused(h.patch(path, params=API, content=b"[" * 200 + b"]" * 200, headers=JSON_HEADERS), 400,
                "InvalidRequestContent")
        refused(h.patch(path, params=API, content=b'{"tags": {}}', headers={"Content-Type": "text/plain"}), 415,
                "UnsupportedMediaType")
        big = b'{"tags": {"t": "' + b"x" * (5 * 1024 * 1024) + b'"}}'
        refused(h.patch(path, params=API, content=big, headers=JSON_HEADERS), 413, "RequestEntityTooLarge")
        refused(h.patch(path, params=API, content=(big[i:i + 65536] for i in range(0, len(big), 65536)),
                        headers=JSON_HEADERS), 413, "RequestEntityTooLarge")  # chunked: no Content-Length
        refused(h.patch(path, params=API, json={"properties": {"virtualMachineProfile": {"storageProfile": {
            "imageReference": {"version": "1.2." + "9" * 5000}}}}}), 400)
        refused(h.patch(path, params=API, json={"properties": {"virtualMachineProfile": {"storageProfile": {
            "imageReference": ["x"]}}}}), 400, "InvalidRequestContent")
        refused(h.patch(path, params=API, content=b'{"properties": {"x": ' + str(2**70).encode() + b"}}",
                        headers=JSON_HEADERS), 400, "InvalidRequestContent")  # (beyond 64 bits)
        refused(h.get(path + "/virtualMachines", params={**API, "$skiptoken": "-5"}), 400)
        refused(h.get(path + "/virtualMachines", params={**API, "$skiptoken": chr(0x0663)}), 400)
        from vmssctl.emulator.server import demo_scale_set
        for name in ("x" * 5000, "web%00", "wéb🙂", "-web", "web."):
            refused(h.put(set_path(frozen, rg, name), params=API, json=demo_scale_set(1)), 400, "InvalidResourceName")
        refused(h.put(f"/subscriptions/{frozen.subscription}/resourcegroups/rg🙂", params={"api-version": "2022-09-01"},
                      json={"location": "eastus"}), 400, "InvalidResourceGroup")
        assert h.get(path, params=API).status_code == 200  # and it still serves
    assert changes(frozen) == before
    assert frozen.now() == clock


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["sku", "tags", "properties", "location", "zones", "name", "capacity",
                         "virtualMachineProfile", "storageProfile", "imageReference", "version", "upgradePolicy",
                         "mode", "x"]), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=json_values, method=st.sampled_from(["PUT", "PATCH", "POST"]))
def test_random_bodies_never_get_a_500_and_refusals_change_nothing(frozen, body, method):
    rg = getattr(test_random_bodies_never_get_a_500_and_refusals_change_nothing, "rg", None)
    if rg is None:
        rg = test_random_bodies_never_get_a_500_and_refusals_change_nothing.rg = make_set(frozen, 1)
    path = set_path(frozen, rg) + ("/manualupgrade" if method == "POST" else "")
    before = changes(frozen)
    with frozen.http() as h:
        r = h.request(method, path, params=API, content=json.dumps(body).encode(), headers=JSON_HEADERS)
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert "error" in r.json()
        assert changes(frozen) == before


# ------------------------------------------------------------------ 2. nothing acknowledged is lost
def test_every_kind_of_write_survives_a_kill(tmp_path):
    """Each acknowledged write is on disk before it is acknowledged: SIGKILL right after it loses nothing."""
    state = tmp_path / "emu"
    emu = start_emulator(state, "--time-scale", "0", "--throttle", "off")
    client = emu.client()
    from vmssctl.emulator.server import demo_scale_set

    rg = "keep-rg"
    writes = [
        lambda: emu.group(rg),
        lambda: client.virtual_machine_scale_sets.begin_create_or_update(rg, "web", demo_scale_set(3), polling=False),
        lambda: emu.admin("POST", "clock", {"advance": 600}),
        lambda: client.virtual_machine_scale_sets.begin_update(
            rg, "web", {"tags": {"k": "v"}, "properties": {"virtualMachineProfile": {"storageProfile": {
                "imageReference": {"version": NEW}}}}}, polling=False),
        lambda: client.virtual_machine_scale_sets.begin_update_instances(rg, "web", {"instanceIds": ["0"]},
                                                                          polling=False),
        lambda: client.virtual_machine_scale_sets.begin_restart(rg, "web", {"instanceIds": ["1"]}, polling=False),
        lambda: client.virtual_machine_scale_set_vms.begin_delete(rg, "web", "2", polling=False),
        lambda: emu.admin("PUT", "faults", {"rules": [{"match": {"version": "9.9.9"}, "effect": "unhealthy"}]}),
        lambda: emu.admin("POST", "images", {"publisher": "Canonical", "offer": "ubuntu-24_04-lts",
                                             "sku": "server", "version": "24.04.202612010"}),
        lambda: client.virtual_machine_scale_sets.begin_delete(rg, "web", polling=False),
    ]
    from vmssctl.rollout.clock import EmulatorClock

    clock = None
    try:
        clock = EmulatorClock(emu.connection)  # (its kept connection dies with each emulator: it opens another)
        for write in writes:
            write()
            expected = emu.admin("GET", "state")
            emu.proc.send_signal(signal.SIGKILL)
            emu.proc.wait()
            emu = start_emulator(state, "--time-scale", "0", "--throttle", "off")
            client = emu.client()
            assert emu.admin("GET", "state") == expected
            assert clock.admin.clock()["now"] == expected["now"]
    finally:
        if clock is not None:
            clock.close()
        emu.stop()


def test_a_state_directory_of_an_older_emulator_is_carried_over(tmp_path):
    """Before SQLite the state was one JSON file (``state.json``, the shape ``/_emulator/state`` still answers):
    such a directory starts with its state, which the first save moves into ``state.db``."""
    state = tmp_path / "emu"
    emu = start_emulator(state, "--time-scale", "0", "--throttle", "off")
    try:
        make_set(emu, 3)
        expected = emu.admin("GET", "state")
    finally:
        emu.stop()
    for old in state.glob("state.db*"):
        old.unlink()
    (state / "state.json").write_text(json.dumps(expected))
    emu = start_emulator(state, "--time-scale", "0", "--throttle", "off")
    try:
        assert emu.admin("GET", "state") == expected
        emu.group("after-rg")  # a write: saved, the JSON file's state with it
        assert (state / "state.db").exists() and not (state / "state.json").exists()
        after = emu.admin("GET", "state")
    finally:
        emu.stop()
    emu = start_emulator(state, "--time-scale", "0", "--throttle", "off")
    try:
        assert emu.admin("GET", "state") == after and len(after["sets"]) == 1
    finally:
        emu.stop()


def test_a_database_whose_meta_row_held_the_groups_is_carried_over(tmp_path):
    """The resource groups were once saved inside the meta row (rewritten whole on every save, however many
    groups there were); now each has a row. Such a database starts with its groups, and the first save, a write
    to one group, gives every group its row."""
    state = tmp_path / "emu"
    emu = start_emulator(state, "--time-scale", "0", "--throttle", "off")
    try:
        make_set(emu, 2)
        emu.group("other-rg")
        expected = emu.admin("GET", "state")
    finally:
        emu.stop()
    with sqlite3.connect(state / "state.db") as db:  # the older layout
        groups = {k[4:]: json.loads(v) for k, v in db.execute("SELECT key, data FROM parts WHERE key LIKE 'grp:%'")}
        meta = json.loads(db.execute("SELECT data FROM parts WHERE key = 'meta'").fetchone()[0])
        db.execute("UPDATE parts SET data = ? WHERE key = 'meta'", (json.dumps({**meta, "groups": groups}).encode(),))
        db.execute("DELETE FROM parts WHERE key LIKE 'grp:%'")
    assert len(groups) == 2
    emu = start_emulator(state, "--time-scale", "0", "--throttle", "off")
    try:
        assert emu.admin("GET", "state") == expected
        emu.group("after-rg")
        after = emu.admin("GET", "state")
    finally:
        emu.stop()
    with sqlite3.connect(state / "state.db") as db:
        rows = {k for (k,) in db.execute("SELECT key FROM parts WHERE key LIKE 'grp:%'")}
        meta = json.loads(db.execute("SELECT data FROM parts WHERE key = 'meta'").fetchone()[0])
    assert rows == {f"grp:{g}" for g in after["groups"]} and len(rows) == 3 and "groups" not in meta
    emu = start_emulator(state, "--time-scale", "0", "--throttle", "off")
    try:
        assert emu.admin("GET", "state") == after
    finally:
        emu.stop()


def test_a_failed_save_is_loud_and_never_passes_for_current(tmp_path):
    state = tmp_path / "emu"
    emu = start_emulator(state, "--time-scale", "0", "--throttle", "off")
    try:
        emu.group("before-rg")
        emu.admin("PUT", "persistence", {"failSaves": True})  # (a full disk cannot be made on demand)
        emu.group("lost-rg")
        stats = emu.admin("GET", "stats")
        assert stats["persistence"]["ok"] is False and stats["persistence"]["failures"] >= 1
        assert not (state / "state.db").exists() and (state / "state.stale.db").exists()
        emu.proc.send_signal(signal.SIGTERM)
        assert emu.proc.wait(20) == 1  # the exit status says the state was not saved
        log = (state / "emulator.log").read_text()
        assert "NOT saved" in log and "Traceback" not in log
        r = subprocess.run([sys.executable, "-m", "vmssctl", "emulator", "--state-dir", str(state)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "last save" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    finally:
        emu.stop()


# ------------------------------------------------------------------ 3. one rollout per scale set
PAIRS = 10  # races started at the same instant, each decided by the tag's If-Match (20 took 12 s)


def test_simultaneous_rollouts_on_one_set_exactly_one_runs(frozen, tmp_path):
    """Two machines (a journal each, in its own directory) start a rollout of one set at the same instant: the
    scale set's tag, written with If-Match, lets exactly one run. (Threads, to make them race; each runs what
    `vmssctl upgrade` runs, minus the DBOS workflow around the engine, which is one per process.)"""
    from vmssctl import upgrade
    from vmssctl.azure import ScaleSetApi, compute_client, resolve_connection
    from vmssctl.errors import UsageError
    from vmssctl.policy import load
    from vmssctl.rollout.journal import Journal
    from vmssctl.target import ImageChange

    rg = make_set(frozen, 2)
    t0 = frozen.now()
    conn = resolve_connection(str(frozen.state_dir))
    for pair in range(PAIRS):
        version = f"24.04.{202700000 + pair}"
        journals = [tmp_path / f"p{pair}-{side}" / "journal.sqlite" for side in "ab"]
        codes: dict[int, int] = {}
        start = threading.Barrier(2)

        def go(side: int, journals=journals, version=version, codes=codes, start=start) -> None:
            api, journal = ScaleSetApi(compute_client(conn), rg, "web"), Journal(journals[side])
            start.wait()
            try:
                prepared = upgrade.prepare(api, journal, conn, ImageChange(version=version),
                                           load(None, {"max_unavailable": "1"}))
                codes[side] = upgrade.start(api, journal, conn, prepared, [])
            except UsageError:
                codes[side] = 2

        threads = [threading.Thread(target=go, args=(side,)) for side in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        runners = [j for j in journals if any(Journal(j).batches(r.id) for r in Journal(j).recent())]
        assert len(runners) == 1, (pair, codes)
        assert sorted(codes.values())[0] == 0
        assert all(i.image.exact_version == version for i in instances(frozen, rg))
    assert record(frozen, rg, t0)["upgrades"] == {"0": PAIRS, "1": PAIRS}


# ------------------------------------------------------------------ 4. fail fast, and blame the right cause
def test_an_unhealthy_instance_fails_its_batch_at_the_next_observation(frozen, up):
    rg = make_set(frozen, 6)
    with frozen.fault("unhealthy", version=NEW):
        code, events, _ = up(rg, "--version", NEW, "--canary", "1", "--health-timeout", "10m")
    assert code == 1
    started = next(e for e in events if e["type"] == "batch_started")
    failed = next(e for e in events if e["type"] == "batch_failed")
    took = failed["time"] - started["time"]
    # upgrade (stop + reimage + boot, jittered up to 20 %) + health grace 60 s + two polls of 10 s
    assert took <= 120 * 1.2 + 60 + 2 * 10, took
    assert "HealthState/unhealthy" in failed["reasons"][0]


def test_a_foreign_model_change_mid_rollout_halts_at_once(frozen, tmp_path):
    rg = make_set(frozen, 6)
    proc = subprocess.Popen(upgrade_args(frozen, rg, tmp_path / "j.sqlite", "--version", NEW, "--batch-size", "2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = []
    assert proc.stdout is not None
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["type"] == "batch_started":
            frozen.client().virtual_machine_scale_sets.begin_update(rg, "web", {"properties": {
                "virtualMachineProfile": {"storageProfile": {"imageReference": {"version": "24.04.202612999"}}}}},
                polling=False)
            break
    events += [json.loads(line) for line in proc.stdout]
    assert proc.wait(60) == 1
    failed = events[-1]
    assert failed["type"] == "rollout_failed" and "changed outside this rollout" in failed["error"], failed
    started = next(e for e in events if e["type"] == "batch_started")
    assert failed["time"] - started["time"] < 300  # not the 600 s health timeout


def test_a_set_without_a_health_signal_needs_an_explicit_flag(frozen, up):
    rg = make_set(frozen, 3, health=False)
    code, _, err = up(rg, "--version", NEW)
    assert code == 2 and "no health signal" in err and "--no-health-signal" in err
    code, events, err = up(rg, "--version", NEW, "--no-health-signal", "--dry-run")
    assert code == 0, err
    assert events[0]["healthSignal"] is None and events[0]["policy"]["no_health_signal"] is True


# ------------------------------------------------------------------ 5. one line, never a traceback
def test_the_emulator_dying_mid_rollout_is_one_line(tmp_path):
    emu = start_emulator(tmp_path / "dying", "--time-scale", "0", "--throttle", "off")
    try:
        rg = make_set(emu, 4)
        proc = subprocess.Popen(upgrade_args(emu, rg, tmp_path / "j.sqlite", "--version", NEW, "--batch-size", "1"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            if json.loads(line)["type"] == "batch_started":
                emu.proc.send_signal(signal.SIGKILL)
                break
        assert proc.wait(120) == 1
        err = proc.stderr.read()
        assert "Traceback" not in err and err.count("\n") == 1 and "resumable" in err, err
    finally:
        emu.stop()


def test_sdk_deserialization_errors_are_one_line():
    from azure.core.exceptions import DeserializationError

    from vmssctl.cli import describe_error

    message, code = describe_error(DeserializationError("Unable to deserialize to object: type, list\nmore"))
    assert code == 1 and "\n" not in message and "cannot read" in message


def test_a_closed_pipe_ends_quietly(frozen, tmp_path):
    from vmssctl.rollout.journal import Journal

    journal = Journal(tmp_path / "j.sqlite")
    for _ in range(50):
        r = journal.create(frozen.subscription, "rg", "web", None, {"version": NEW}, {"version": "1"}, {})
        journal.update(r.id, state="failed", error="x" * 2000)
    shell = f"{sys.executable} -m vmssctl rollout list -o json --journal {tmp_path / 'j.sqlite'} | head -c 10"
    r = subprocess.run(["bash", "-c", shell + "; echo; echo ${PIPESTATUS[0]}"], capture_output=True, text=True,
                       timeout=60)
    assert r.stderr == "", r.stderr
    assert r.stdout.splitlines()[-1] in ("0", "1")


# ------------------------------------------------------------------ 6. one true set of numbers
def test_every_view_shows_the_same_numbers_and_the_plans_floor(frozen, up, tmp_path, capsys):
    from vmssctl.dashboard.html import rollout_panel
    from vmssctl.rollout.journal import Journal
    from vmssctl.rollout.progress import Progress

    rg = make_set(frozen, 10)
    code, events, err = up(rg, "--version", NEW, "--canary", "1", "--batch-size", "3")
    assert code == 0, err
    plan = next(e for e in events if e["type"] == "plan")
    progress = [e for e in events if e["type"] == "progress"]
    assert progress
    for p in progress:
        assert p["floor"] == plan["plan"]["floor"] == 7
        assert p["batches_total"] == len(plan["plan"]["batches"]) == 4
        assert 0 <= p["batch_no"] <= p["batches_total"]
        assert p["total"] == 10 and 0 <= p["done"] <= p["total"]
        assert p["simulated"] is True
    assert [p["batch_no"] for p in progress] == sorted(p["batch_no"] for p in progress)
    mid = [p for p in progress if p["done"] < p["total"]]
    assert all(p["eta"] > 0 for p in mid)
    journal = Journal(tmp_path / "journal.sqlite")
    r = journal.recent()[0]
    from vmssctl.cli import main

    assert main(["rollout", "status", r.id, "--journal", str(tmp_path / "journal.sqlite"), "-o", "json"]) == 0
    final = json.loads(capsys.readouterr().out)["progress"]
    assert (final["batch_no"], final["batches_total"], final["done"], final["total"], final["floor"]) == \
        (4, 4, 10, 10, 7)
    assert final["state"] == "succeeded" and final["eta"] == 0
    assert abs(final["elapsed"] - events[-1]["seconds"]) < 1
    html = rollout_panel(r, Progress.from_json(r.progress), journal.events(r.id), journal.batches(r.id))
    assert 'batch <b class="batch-no">4</b> of <b class="batches-total">4</b>' in html
    assert '<b class="floor">7</b>' in html and "<svg" in html and "simulated" in html


def test_a_rollback_counts_its_own_batches(frozen, up):
    rg = make_set(frozen, 6)
    with frozen.fault("unhealthy", version=NEW):
        code, events, err = up(rg, "--version", NEW, "--canary", "1", "--rollback", "auto")
    assert code == 1, err
    back = [e for e in events if e["type"] == "progress" and e["phase"] == "rollback"]
    assert back and all(1 <= p["batch_no"] <= p["batches_total"] or p["done"] == 0 for p in back)
    assert all(p["batches_total"] >= 1 for p in back)
    assert events[-1]["type"] == "rollout_rolled_back"


def test_interrupted_time_is_left_out_and_resume_needs_no_flags(frozen, tmp_path):
    rg = make_set(frozen, 6)
    journal = tmp_path / "journal.sqlite"
    args = upgrade_args(frozen, rg, journal, "--version", NEW, "--batch-size", "2")
    seen = run_and_kill(args, "batch_started", 2)
    rid = seen[0]["rollout"] if "rollout" in seen[0] else next(e["rollout"] for e in seen if "rollout" in e)
    frozen.admin("POST", "clock", {"advance": 3000})  # nobody runs the rollout for 50 simulated minutes
    code, events, err = run([sys.executable, "-m", "vmssctl", "rollout", "resume", rid, "--journal", str(journal),
                             "-o", "json"])  # no --emulator: the journal knows how the rollout connected
    assert code == 0, err
    resumed = next(e for e in events if e["type"] == "rollout_resumed")
    assert resumed["interrupted"] >= 3000
    assert all(e["seconds"] < 600 for e in events if e["type"] == "batch_succeeded")
    assert events[-1]["type"] == "rollout_succeeded" and events[-1]["seconds"] < 3000
