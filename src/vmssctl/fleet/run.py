"""Running a fleet on DBOS: the fleet is a durable workflow, each scale set a child workflow on a queue.

The fleet workflow walks the stages in order: it waits for a person's approval where a stage asks for one,
keeps at most the stage's concurrency of its sets in flight on the sets queue, records each outcome, halts
when the halt rule says so, and bakes before the next stage. Each set's workflow has one step that runs
vmssctl's own level-triggered rollout engine (prepare, then start, or resume what its journal has): a step
runs at least once, and running the engine again is resuming it, so a process killed anywhere picks up where
ARM says it is. DBOS records the workflows, their steps and the fleet's events in its system database (SQLite
by default; PostgreSQL for several workers) and recovers unfinished fleets when vmssctl starts again with the
same database.

A fleet file run again in the same place is a new run of the same fleet: ``f-<digest>``, then ``f-<digest>.2``
and so on (a set's workflow is named after its run and the set, so runs never collide). Sets already on the
target are ``unchanged`` in it, new ones are upgraded, and the stages apply as before.

Workflow inputs are stored by DBOS: they carry how to connect (an emulator's directory, or endpoint and
subscription), never a token.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Callable, Iterator

from dbos import DBOS, SetWorkflowID

from vmssctl import durable
from vmssctl.durable import APP_VERSION, client
from vmssctl.errors import VmssctlError
from vmssctl.fleet.spec import StagePlan, parse
from vmssctl.fleet.view import RUNNING, FleetView, stages_of, view

EVENTS = "events"  # the stream a fleet writes its events to
CONTROL = "control"  # the topic of the messages that steer a fleet: pause, resume, abort, approve, reject
FLEETS_QUEUE = "vmssctl-fleets"  # fleets handed to workers (`vmssctl worker`)
SETS_QUEUE = "vmssctl-sets"  # every set's rollout; a fleet keeps at most its stage's concurrency of them in flight
SETS_AT_ONCE = 200  # sets one process runs at once, whatever the fleets ask
ENQUEUERS = 8  # sets put on the queue at once as a stage starts
BAKE_SLICE = 60.0  # a bake waits in steps this long (on the rollout's clock), looking for an abort between them
HOLD = 24 * 3600.0  # a durable wait for a message (approval, resume) is renewed after this long
log = logging.getLogger("vmssctl.fleet")


def launch(database: str, executor_id: str | None = None, fleets: bool = False) -> None:
    """Start DBOS on ``database`` with the fleets' queues; ``fleets``: also take fleets from the fleets queue, as
    a worker does."""
    durable.launch(database, executor_id)
    DBOS.register_queue(SETS_QUEUE, worker_concurrency=SETS_AT_ONCE, polling_interval_sec=durable.QUEUE_POLL)
    if fleets:
        DBOS.register_queue(FLEETS_QUEUE, polling_interval_sec=durable.FLEET_QUEUE_POLL)


def log_sets() -> None:
    """Say on stdout when this process starts and finishes a set of a fleet (a worker's log: which sets it ran)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def fleet_id(spec_text: str, connection: dict) -> str:
    """One id per fleet file and place: its runs are this id, then ``id.2``, ``id.3``..."""
    digest = hashlib.sha256((spec_text + repr(sorted(connection.items()))).encode()).hexdigest()
    return f"f-{digest[:12]}"


def set_connection(connection: dict, key: str) -> dict:
    """The fleet's connection, in the subscription of the set ``key`` (subscription/rg/name)."""
    return {**connection, "subscription": key.split("/", 1)[0]}


# ------------------------------------------------------------------------------------------- steps
_clocks: dict[str, tuple[float, object]] = {}  # a connection -> (when it was read, its clock), for _now
CLOCK_FRESH = 5.0  # real seconds a clock read for an event's time is used before it is read again


@DBOS.step()
def _now(connection: dict) -> float:
    """The fleet's time for an event: the emulator's clock (simulated seconds) or the wall clock. The clock is read
    once and then kept for a few seconds (it extrapolates on its own): reading it is a request to the emulator,
    which a fleet starting ninety sets would otherwise make ninety times in a row."""
    key = repr(sorted(connection.items()))
    at, clock = _clocks.get(key, (0.0, None))
    if clock is None or time.monotonic() - at > CLOCK_FRESH:
        clock = _clock(connection)
        _clocks[key] = (time.monotonic(), clock)
    return clock.now()  # type: ignore[attr-defined]


@DBOS.step()
def _bake(connection: dict, seconds: float) -> None:
    """Wait on the rollout's clock: the emulator's when it is one (its simulated seconds), else real time."""
    _clock(connection).sleep(seconds)


def _clock(connection: dict):
    from vmssctl.rollout.clock import clock_for

    return clock_for(_connect(connection))


def _connect(connection: dict):
    from vmssctl.azure import connection_from_json

    return connection_from_json(connection)


@DBOS.step()
def _pin_latest(connection: dict, change: dict, keys: list[str]) -> dict:
    """``version = "latest"``: the newest version of the image published in every region of the fleet's sets, so
    that every set gets the same one (a version published midway, or in some regions only, does not split the
    fleet); {"error": why} when no version is in all of them."""
    return pin_latest(connection, change, keys)


def pin_latest(connection: dict, change: dict, keys: list[str]) -> dict:
    from vmssctl.azure import ScaleSetApi, compute_client
    from vmssctl.model import ImageRef
    from vmssctl.target import ImageChange

    target: ImageRef | None = None
    regions: set[str] = set()
    common: set[str] | None = None
    for key in keys:
        _, rg, name = key.split("/", 2)
        api = ScaleSetApi(compute_client(_connect(set_connection(connection, key))), rg, name)
        try:
            ss = api.get()
            target = ImageChange(**change).apply(ss.image)
            region = ss.location.lower().replace(" ", "")
            if region not in regions:
                regions.add(region)
                here = set(api.image_versions(ss.location, target))
                common = here if common is None else common & here
        finally:
            api.close()
    if target is None or common is None:
        return {"error": "no scale set to resolve 'latest' for"}
    if not common:
        return {"error": f"no version of {target.publisher}:{target.offer}:{target.sku} is published in all of "
                         f"{', '.join(sorted(regions))}: name one, or publish it there"}
    newest = max(common, key=lambda v: tuple(int(x) for x in v.split(".")))
    return {"version": newest, "regions": sorted(regions)}


@DBOS.step(retries_allowed=False)
def _run_set(connection: dict, journal: str, key: str, change: dict, policy: dict, budget: dict, run: str) -> dict:
    """Run (or resume) one scale set's rollout with vmssctl's engine; its outcome as the fleet records it."""
    from vmssctl import upgrade
    from vmssctl.azure import ScaleSetApi, compute_client
    from vmssctl.budget import Budget
    from vmssctl.policy import RolloutPolicy
    from vmssctl.rollout.journal import Journal
    from vmssctl.target import ImageChange

    _, rg, name = key.split("/", 2)
    t0 = time.monotonic()
    log.info("fleet %s: %s started", run, key)
    outcome: dict = {"key": key, "state": "failed", "code": 1}
    try:
        conn = _connect(set_connection(connection, key))
        api = ScaleSetApi(compute_client(conn, budget=Budget(**budget)), rg, name)
        jour = Journal(durable.database_or(journal), patient=True)
    except VmssctlError as e:
        outcome = {"key": key, "state": "failed", "code": e.exit_code, "error": str(e)}
        log.info("fleet %s: %s failed: %s", run, key, e)
        return outcome
    try:
        prepared = upgrade.prepare(api, jour, conn, ImageChange(**change), RolloutPolicy.from_json(policy))
        if prepared.nothing_to_do:
            outcome = {"key": key, "state": "unchanged", "code": 0}
            return outcome
        rollout = upgrade.begin(jour, conn, api, prepared, fleet=run)
        code = upgrade.run(api, jour, conn, rollout, [])
        r = jour.get(rollout.id)
        outcome = {"key": key, "state": r.state, "code": code, "rollout": r.id, "error": r.error}
        return outcome
    except VmssctlError as e:
        outcome = {"key": key, "state": "failed", "code": e.exit_code, "error": str(e)}
        return outcome
    except Exception as e:  # a bug: the set failed, the fleet goes on (and says why)
        outcome = {"key": key, "state": "failed", "code": 1,
                   "error": f"internal error: {e.__class__.__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
        return outcome
    finally:
        api.close()
        jour.close()
        log.info("fleet %s: %s %s in %.0fs%s", run, key, outcome["state"], time.monotonic() - t0,
                 f" (rollout {outcome['rollout']})" if outcome.get("rollout") else "")


@DBOS.step(retries_allowed=False)
def _rollback_set(connection: dict, journal: str, rollout_id: str) -> dict:
    from vmssctl import upgrade
    from vmssctl.azure import ScaleSetApi, compute_client
    from vmssctl.rollout.journal import Journal

    jour = Journal(durable.database_or(journal), patient=True)
    try:
        r = jour.get(rollout_id)
        key = f"{r.subscription}/{r.resource_group}/{r.name}"
        if r.state == "rolled_back":
            return {"key": key, "state": r.state, "code": 0, "rollout": r.id}
        conn = _connect({**connection, "subscription": r.subscription})
        api = ScaleSetApi(compute_client(conn), r.resource_group, r.name)
        try:
            code = upgrade.resume(api, jour, conn, r, [], rollback=True)
        except VmssctlError as e:
            return {"key": key, "state": "failed", "code": e.exit_code, "rollout": r.id, "error": str(e)}
        finally:
            api.close()
        after = jour.get(rollout_id)
        return {"key": key, "state": after.state, "code": code, "rollout": r.id, "error": after.error}
    finally:
        jour.close()


@DBOS.step()
def _touched(journal: str, run: str) -> list[dict]:
    """The rollouts a fleet run started (or resumed), from the journal: what its rollback puts back."""
    from vmssctl.rollout.journal import Journal

    jour = Journal(durable.database_or(journal), patient=True)
    try:
        return [{"rollout": r.id, "key": f"{r.subscription}/{r.resource_group}/{r.name}", "state": r.state}
                for r in jour.of_fleet([run])]
    finally:
        jour.close()


# --------------------------------------------------------------------------------------- workflows
@DBOS.workflow()
def set_workflow(connection: dict, journal: str, key: str, change: dict, policy: dict, budget: dict,
                 run: str = "") -> dict:
    return _run_set(connection, journal, key, change, policy, budget, run)


@DBOS.workflow()
def rollback_set_workflow(connection: dict, journal: str, rollout_id: str) -> dict:
    return _rollback_set(connection, journal, rollout_id)


class _Control:
    """`fleet pause|resume|abort|approve|reject` arrive as messages on one topic, in the order they were sent.
    ``poll`` looks without waiting (and holds while paused); ``approval`` waits durably for a stage's approval
    (a DBOS message wakes it: nothing polls, and the wait survives restarts of everything). Approvals that
    arrive early are kept for their stage; what the fleet received is recorded by DBOS, so a recovered fleet
    decides the same again."""

    def __init__(self, emit: Callable[..., None]) -> None:
        self.emit = emit
        self.decisions: list[dict] = []
        self.paused = False
        self.abort: dict | None = None

    def _next(self, wait: float) -> str | None:
        """Take one message (waiting up to ``wait``): approvals and rejections are kept; returns pause, resume or
        abort (already acted on), or None."""
        m = DBOS.recv(CONTROL, timeout_seconds=wait)
        if m is None:
            return None
        m = {"op": m} if isinstance(m, str) else dict(m) if isinstance(m, dict) else {}
        op = m.get("op")
        if op in ("approve", "reject"):
            self.decisions.append(m)
        elif op == "pause" and not self.paused:
            self.paused = True
            self.emit("fleet_paused", by=m.get("by"))
        elif op == "resume" and self.paused:
            self.paused = False
            self.emit("fleet_resumed", by=m.get("by"))
        elif op == "abort":
            self.abort = m
        return op if op in ("pause", "resume", "abort") else None

    def poll(self) -> str | None:
        """Whatever was sent, acted on; "abort" when the fleet is to stop starting sets. A pause holds here until
        resume or abort."""
        while self.abort is None and self._next(0) is not None:
            pass
        while self.paused and self.abort is None:
            self._next(HOLD)
        return "abort" if self.abort is not None else None

    def approval(self, stage: str, when: str) -> tuple[str, dict]:
        """Wait for a person to approve or reject ``stage`` (``when``: before it starts, or after its bake):
        ("approved" | "rejected" | "abort", the message)."""
        self.emit("approval_waiting", stage=stage, when=when)
        while True:
            if self.abort is not None:
                return "abort", self.abort
            found = next((d for d in self.decisions if d.get("stage") == stage and d.get("when") in (None, when)),
                         None)
            if found is not None and not self.paused:
                self.decisions.remove(found)
                if found.get("op") == "approve":
                    self.emit("stage_approved", stage=stage, when=when, by=found.get("by"))
                    return "approved", found
                self.emit("stage_rejected", stage=stage, when=when, by=found.get("by"), reason=found.get("reason"))
                return "rejected", found
            self._next(HOLD)


@DBOS.workflow()
def fleet_workflow(spec_text: str, plan: list[dict], connection: dict, journal: str) -> dict:
    """The stages in order, each stage's sets in parallel up to its concurrency; approve, halt, bake, report."""
    spec = parse(spec_text)
    run = DBOS.workflow_id or ""
    change = {k: v for k, v in vars(spec.target).items() if v is not None}
    policy = spec.policy.to_json()
    budget = {"reads": spec.reads_per_second, "writes": spec.writes_per_second}

    def emit(kind: str, **data: object) -> None:
        DBOS.write_stream(EVENTS, {"type": kind, "fleet": run, "time": _now(connection), **data})

    control = _Control(emit)
    stages = stages_of(plan)
    emit("fleet_started", name=spec.name, stages=[s["stage"] for s, _ in stages],
         sets=sum(len(keys) for _, keys in stages))
    if str(change.get("version", "")).lower() == "latest":  # one version for every set, resolved once (a step:
        pinned = _pin_latest(connection, change, [k for _, keys in stages for k in keys])  # a resumed fleet keeps it)
        if "error" in pinned:
            emit("fleet_halted", stage=stages[0][0]["stage"] if stages else "", reason=pinned["error"])
            return {"state": "halted", "reason": pinned["error"]}
        change = {**change, "version": pinned["version"]}
        emit("version_pinned", version=pinned["version"], regions=pinned["regions"])
    started = failed = 0

    def aborted(**where: object) -> dict:
        emit("fleet_aborted", by=(control.abort or {}).get("by"), **where)
        return {"state": "aborted"}

    def halted(stage: str, reason: str) -> dict:
        emit("fleet_halted", stage=stage, reason=reason)
        return {"state": "halted", "reason": reason}

    def decided(stage: str, when: str) -> dict | None:
        """Wait for a person's decision on ``stage``: None to go on, else how the fleet ends (aborted, or halted by
        a rejection)."""
        verdict, message = control.approval(stage, when)
        if verdict == "abort":
            return aborted(**{"before_stage" if when == "before" else "stage": stage})
        if verdict == "rejected":
            return halted(stage, _rejected(stage, message))
        return None

    for n, (stage, keys) in enumerate(stages, 1):
        name = stage["stage"]
        if not keys:
            emit("stage_skipped", stage=name, reason="the fleet selects no scale set for it")
            continue
        if control.poll() == "abort":  # `fleet abort`: no stage starts after it
            return aborted(before_stage=name)
        if stage.get("approve") and (end := decided(name, "before")) is not None:
            return end
        emit("stage_started", stage=name, number=n, sets=keys)
        def child(key: str) -> tuple[Callable, tuple]:
            return set_workflow, (set_connection(connection, key), journal, key, change, policy, budget, run)

        def finished(r: dict, s: str = name) -> None:
            emit("set_finished", stage=s, set=_short(r["key"]), **r)

        def begun(keys: list[str], s: str = name) -> None:
            emit("sets_started", stage=s, keys=keys, sets=[_short(k) for k in keys])
        results = _fan_out(keys, int(stage.get("concurrency", 1)), control, child, f"{run}:", finished, begun)
        stage_failed = sum(1 for r in results if r["code"] != 0 and r.get("state") != "aborted")
        changed = sum(1 for r in results if r.get("state") != "unchanged")
        started, failed = started + len(results), failed + stage_failed
        emit("stage_finished", stage=name, failed=stage_failed, changed=changed)
        if any(r.get("state") == "aborted" for r in results) or control.abort is not None:
            return aborted(stage=name)
        if spec.halts(failed, started):
            return halted(name, f"{failed} of {started} scale set(s) failed, more than the fleet's halt rule allows")
        if stage.get("bake") and n < len(stages):
            if not changed:
                emit("bake_skipped", stage=name, reason="no scale set changed in this stage")
            else:
                emit("bake_started", stage=name, seconds=stage["bake"])
                left = float(stage["bake"])
                while left > 0:  # in slices: `fleet abort` ends a bake within one
                    if control.poll() == "abort":
                        return aborted(stage=name, baking=True)
                    _bake(connection, min(left, BAKE_SLICE))
                    left -= BAKE_SLICE
                emit("bake_finished", stage=name)
        if stage.get("approve_after") and (end := decided(name, "after")) is not None:
            return end
    emit("fleet_succeeded", sets=started)
    return {"state": "succeeded"}


def _short(key: str) -> str:
    return key.split("/", 1)[-1]


def _rejected(stage: str, message: dict) -> str:
    return f"stage '{stage}' was rejected by {message.get('by') or 'a person'}: {message.get('reason') or 'no reason'}"


def _fan_out(keys: list[str], concurrency: int, control: _Control, workflow_of: Callable, prefix: str,
             finished: Callable[[dict], None], started: Callable[[list[str]], None] | None = None) -> list[dict]:
    """The sets' child workflows on the sets queue, at most ``concurrency`` in flight: a sliding window, so a slow
    set holds one place rather than a whole wave. Each child is named ``prefix`` + its set's key; the sets started
    together are told in one event. A pause holds the next set back; an abort starts no more (the sets in flight
    stop their own batches, asked through the journal). Results in the keys' order."""
    waiting = list(keys)
    running: dict[str, object] = {}
    done: dict[str, dict] = {}
    while waiting or running:
        if waiting and control.poll() == "abort":
            for k in waiting:
                done[k] = {"key": k, "state": "aborted", "code": 3, "error": "not started: the fleet was aborted"}
                finished(done[k])
            waiting = []
        now_started = waiting[:max(0, concurrency - len(running))]
        waiting = waiting[len(now_started):]
        running.update(_enqueue(now_started, workflow_of, prefix))
        if now_started and started is not None:
            started(now_started)
        if not running:
            break
        first = DBOS.wait_first(list(running.values()), polling_interval_sec=0.2)  # type: ignore[arg-type]
        key = next(k for k, h in running.items() if h.workflow_id == first.workflow_id)  # type: ignore[attr-defined]
        done[key] = first.get_result()
        finished(done[key])
        del running[key]
    return [done[k] for k in keys]


def _enqueue(keys: list[str], workflow_of: Callable, prefix: str) -> dict[str, object]:
    """The sets' child workflows put on the sets queue a few at once, from threads of their own: one after
    another, each a few database writes that waited for the GIL behind the sets already starting, a stage of 90
    took 190 simulated seconds to start its last. Each is named by its set: a recovered fleet that puts it on
    the queue again finds the one it put there (DBOS returns the workflow of that id)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(key: str) -> tuple[str, object]:
        workflow, args = workflow_of(key)
        with SetWorkflowID(prefix + key):
            return key, DBOS.enqueue_workflow(SETS_QUEUE, workflow, *args)
    if not keys:
        return {}
    with ThreadPoolExecutor(min(ENQUEUERS, len(keys)), thread_name_prefix="fleet-enqueue") as pool:
        return dict(pool.map(one, keys))


@DBOS.workflow()
def rollback_workflow(run: str, plan: list[dict], connection: dict, journal: str) -> dict:
    """Every set the fleet run changed back to its previous image (the rollouts it started, from the journal),
    newest stage first, each stage's sets in parallel up to its concurrency."""
    me = DBOS.workflow_id or ""

    def emit(kind: str, **data: object) -> None:
        DBOS.write_stream(EVENTS, {"type": kind, "fleet": run, "time": _now(connection), **data})

    touched = [t for t in _touched(journal, run) if t["state"] != "rolled_back"]
    stage_of = {k.lower(): s["stage"] for s, keys in stages_of(plan) for k in keys}
    emit("rollback_started", sets=len(touched))
    control = _Control(emit)
    results: list[dict] = []
    for stage, _ in reversed(stages_of(plan)):
        mine = [t for t in touched if stage_of.get(t["key"].lower()) == stage["stage"]]
        if not mine:
            continue
        by_key = {t["key"]: t for t in mine}
        emit("rollback_stage_started", stage=stage["stage"], sets=list(by_key))

        def child(key: str, b: dict = by_key) -> tuple[Callable, tuple]:
            return rollback_set_workflow, (set_connection(connection, key), journal, b[key]["rollout"])

        def rolled_back(r: dict, s: str = stage["stage"]) -> None:
            emit("set_rolled_back", stage=s, set=_short(r["key"]), **r)
        results += _fan_out(list(by_key), int(stage.get("concurrency", 1)), control, child, f"{me}:", rolled_back)
    failed = sum(1 for r in results if r["state"] != "rolled_back")
    emit("fleet_rolled_back", sets=len(results), failed=failed)
    return {"state": "rolled_back" if not failed else "failed", "sets": results}


# ------------------------------------------------------------------------------------------ drivers
def plan_json(plans: list[StagePlan]) -> list[dict]:
    return [{"stage": p.stage.name, "sets": [r.key for r in p.sets], "concurrency": p.stage.concurrency,
             "bake": p.stage.bake, "approve": p.stage.approve, "approve_after": p.stage.approve_after}
            for p in plans]


def runs(lister, fid: str, workflow: str = "fleet_workflow") -> list:
    """The runs of fleet ``fid`` (its workflows named ``fid`` and ``fid.N``), oldest first."""
    found = lister(workflow_id_prefix=fid, name=workflow, load_input=False, load_output=False)
    mine = [w for w in found if w.workflow_id == fid or w.workflow_id.startswith(fid + ".")]
    return sorted(mine, key=lambda w: _run_number(w.workflow_id))


def _run_number(run_id: str) -> int:
    tail = run_id.rsplit(".", 1)[-1] if "." in run_id else "1"
    return int(tail) if tail.isdigit() else 1


def _run_to_start(fid: str, lister) -> tuple[str, bool]:
    """(the run's id, whether to start it): a run still going is resumed (watched), not started again; once the
    last has ended, running the file again is a new run, ``fid.N``."""
    found = runs(lister, fid)
    live = [w for w in found if w.status in RUNNING]
    if live:
        return live[-1].workflow_id, False
    if not found:
        return fid, True
    return f"{fid}.{_run_number(found[-1].workflow_id) + 1}", True


def start(spec_text: str, plans: list[StagePlan], connection: dict, journal: str) -> tuple[str, bool]:
    """Start the fleet in this process, or find it running (a second `fleet run` of the same file resumes it).
    Returns the run's id and whether it is a new run."""
    run, new = _run_to_start(fleet_id(spec_text, connection), DBOS.list_workflows)
    if new:
        with SetWorkflowID(run):
            DBOS.start_workflow(fleet_workflow, spec_text, plan_json(plans), connection, journal)
    return run, new


def hand_to_workers(database: str, spec_text: str, plans: list[StagePlan], connection: dict,
                    journal: str) -> tuple[str, bool]:
    """Enqueue the fleet for `vmssctl worker` processes sharing ``database`` (no workflow runs here)."""
    from dbos import EnqueueOptions

    c = client(database, f"no vmssctl worker has prepared {database.split('@')[-1]} yet: start one with "
                         "'vmssctl worker --database …'")
    try:
        run, new = _run_to_start(fleet_id(spec_text, connection), c.list_workflows)
        if new:
            options: EnqueueOptions = {"queue_name": FLEETS_QUEUE, "workflow_name": fleet_workflow.__qualname__,
                                       "workflow_id": run, "app_version": APP_VERSION}
            c.enqueue(options, spec_text, plan_json(plans), connection, journal)
        return run, new
    finally:
        c.destroy()


def plan_of(status) -> list[dict]:
    """The stages a fleet was started with, from its workflow's recorded input."""
    args = status.input.get("args", []) if isinstance(status.input, dict) else []
    return args[1] if len(args) > 1 else []


def connection_of(status) -> dict:
    """How the fleet connects (its workflow's recorded input): what status, abort and rollback use by default."""
    args = status.input.get("args", []) if isinstance(status.input, dict) else []
    return args[2] if len(args) > 2 and isinstance(args[2], dict) else {}


def journal_of(status) -> str:
    args = status.input.get("args", []) if isinstance(status.input, dict) else []
    return args[3] if len(args) > 3 and isinstance(args[3], str) else ""


def stream(c, workflow_id: str, offset: int = 0) -> list[dict]:
    """The events a workflow has written so far, from ``offset`` (a running one's too: this does not wait)."""
    from dbos._error import DBOSStreamTimeoutError

    out: list[dict] = []
    try:
        for value in c.read_stream(workflow_id, EVENTS, offset=offset, timeout_seconds=0.0):
            out.append(value)
    except DBOSStreamTimeoutError:  # nothing more yet
        pass
    except Exception as e:  # no such workflow (yet): nothing written
        if "does not exist" not in str(e) and e.__class__.__name__ != "DBOSNonExistentWorkflowError":
            raise
    return out


def rollback_runs(lister, run: str) -> list:
    """The rollbacks of a fleet run (``run-rollback``, ``run-rollback.2``...), oldest first."""
    return runs(lister, f"{run}-rollback", "rollback_workflow")


def load(c, run: str, journal=None, now: float | None = None) -> FleetView | None:
    """A fleet run as it stands, read through a DBOS client ``c`` (nothing runs here): its plan, events, its
    rollbacks' events, and (with ``journal``) the progress of its sets' rollouts. None: no such fleet."""
    found = c.list_workflows(workflow_ids=[run], load_input=True, load_output=False)
    if not found or found[0].name != fleet_workflow.__qualname__:
        return None
    return view_of(c, found[0], journal, now)


def view_of(c, status, journal=None, now: float | None = None) -> FleetView:
    """The FleetView of a fleet run whose DBOS status (with its input) has been read."""
    run = status.workflow_id
    events = stream(c, run)
    for rb in rollback_runs(c.list_workflows, run):
        events += stream(c, rb.workflow_id)
    progress: dict[str, dict] = {}
    if journal is not None:
        for r in journal.of_fleet([run]):
            if r.progress:
                progress[r.scale_set] = {**r.progress, "rollout_id": r.id}
    return view(run, plan_of(status), events, status.status, progress, now)


def recent(c, journal=None, limit: int = 50) -> list[FleetView]:
    """The newest fleet runs of the database, newest first, each as it stands."""
    found = c.list_workflows(name=fleet_workflow.__qualname__, sort_desc=True, limit=limit, load_input=True,
                             load_output=False)
    return [view_of(c, w, journal) for w in found]


def events(run: str) -> Iterator[dict]:
    """The fleet's events as they come, until it ends (in the process that runs it)."""
    if DBOS.get_workflow_status(run):
        yield from DBOS.read_stream(run, EVENTS)


def start_rollback(run: str, plan: list[dict], connection: dict, journal: str, lister) -> str:
    """Start (in this process) a rollback of the fleet run, or find the one running; its workflow id."""
    found = rollback_runs(lister, run)
    live = [w for w in found if w.status in RUNNING]
    if live:
        return live[-1].workflow_id
    rid = f"{run}-rollback" if not found else f"{run}-rollback.{_run_number(found[-1].workflow_id) + 1}"
    with SetWorkflowID(rid):
        DBOS.start_workflow(rollback_workflow, run, plan, connection, journal)
    return rid
