"""Running a fleet on DBOS: the fleet is a durable workflow, each scale set a child workflow on a queue.

The fleet workflow walks the stages in order: it keeps at most the stage's concurrency of its sets in
flight on the sets queue, records each outcome, halts when the halt rule says so, and bakes before the
next stage. Each set's workflow has one step that runs vmssctl's own level-triggered rollout
engine (prepare, then start, or resume what its journal has): a step runs at least once, and running the
engine again is resuming it, so a process killed anywhere picks up where ARM says it is. DBOS records
the workflows, their steps and the fleet's events in its system database (SQLite by default; PostgreSQL
for several workers) and recovers unfinished fleets when vmssctl starts again with the same database.

Workflow inputs are stored by DBOS: they carry how to connect (an emulator's directory, or endpoint and
subscription), never a token.
"""

from __future__ import annotations

import hashlib

from dbos import DBOS, SetWorkflowID

from vmssctl import durable
from vmssctl.durable import APP_VERSION, client
from vmssctl.errors import VmssctlError
from vmssctl.fleet.spec import StagePlan, parse
from vmssctl.fleet.view import RUNNING
from vmssctl.policy import RolloutPolicy

EVENTS = "events"  # the stream a fleet writes its events to
FLEETS_QUEUE = "vmssctl-fleets"  # fleets handed to workers (`vmssctl worker`)
SETS_QUEUE = "vmssctl-sets"  # every set's rollout; a fleet keeps at most its stage's concurrency of them in flight
SETS_AT_ONCE = 200  # sets one process runs at once, whatever the fleets ask
BAKE_SLICE = 60.0  # a bake waits in steps this long (on the rollout's clock), looking for an abort between them


def launch(database: str, executor_id: str | None = None, fleets: bool = False) -> None:
    """Start DBOS on ``database`` with the fleets' queues; ``fleets``: also take fleets from the fleets queue, as
    a worker does."""
    durable.launch(database, executor_id)
    DBOS.register_queue(SETS_QUEUE, worker_concurrency=SETS_AT_ONCE, polling_interval_sec=durable.QUEUE_POLL)
    if fleets:
        DBOS.register_queue(FLEETS_QUEUE, polling_interval_sec=durable.QUEUE_POLL)


def fleet_id(spec_text: str, connection: dict) -> str:
    """One id per fleet file and place: running the same file again resumes the same fleet."""
    digest = hashlib.sha256((spec_text + repr(sorted(connection.items()))).encode()).hexdigest()
    return f"f-{digest[:12]}"


# ------------------------------------------------------------------------------------------- steps
@DBOS.step()
def _now(connection: dict) -> float:
    return _clock(connection).now()


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


@DBOS.step(retries_allowed=False)
def _run_set(connection: dict, journal: str, key: str, change: dict, policy: dict, budget: dict) -> dict:
    """Run (or resume) one scale set's rollout with vmssctl's engine; its outcome as the fleet records it."""
    from vmssctl import upgrade
    from vmssctl.azure import ScaleSetApi, compute_client
    from vmssctl.budget import Budget
    from vmssctl.rollout.journal import Journal
    from vmssctl.target import ImageChange

    rg, name = key.split("/", 1)
    conn = _connect(connection)
    api = ScaleSetApi(compute_client(conn, budget=Budget(**budget)), rg, name)
    jour = Journal(durable.database_or(journal))
    try:
        prepared = upgrade.prepare(api, jour, conn, ImageChange(**change), RolloutPolicy.from_json(policy))
        if prepared.plan.pending == 0 and not prepared.diff and prepared.resume is None:
            return {"set": key, "state": "unchanged", "code": 0}
        rollout = upgrade.begin(jour, conn, api, prepared)
        code = upgrade.run(api, jour, conn, rollout, [])
        r = jour.get(rollout.id)
        return {"set": key, "state": r.state, "code": code, "rollout": r.id, "error": r.error}
    except VmssctlError as e:
        return {"set": key, "state": "failed", "code": e.exit_code, "error": str(e)}
    finally:
        api.close()
        jour.close()


# --------------------------------------------------------------------------------------- workflows
@DBOS.workflow()
def set_workflow(connection: dict, journal: str, key: str, change: dict, policy: dict, budget: dict) -> dict:
    return _run_set(connection, journal, key, change, policy, budget)


@DBOS.workflow()
def fleet_workflow(spec_text: str, plan: list[dict], connection: dict, journal: str) -> dict:
    """The stages in order, each stage's sets in parallel up to its concurrency; halt, bake, report."""
    spec = parse(spec_text)
    change = {k: v for k, v in vars(spec.target).items() if v is not None}
    policy = spec.policy.to_json()
    budget = {"reads": spec.reads_per_second, "writes": spec.writes_per_second}

    def emit(kind: str, **data: object) -> None:
        DBOS.write_stream(EVENTS, {"type": kind, "fleet": DBOS.workflow_id, "time": _now(connection), **data})

    emit("fleet_started", name=spec.name, stages=[s["stage"] for s in plan])
    started = failed = 0
    outcomes: list[dict] = []
    for n, stage in enumerate(plan, 1):
        if _control(emit) == "abort":  # `fleet abort`: no stage starts after it
            emit("fleet_aborted", before_stage=stage["stage"])
            return {"state": "aborted", "sets": outcomes}
        emit("stage_started", stage=stage["stage"], number=n, sets=stage["sets"])
        results = _run_stage(stage, connection, journal, change, policy, budget, emit)
        for r in results:
            emit("set_finished", stage=stage["stage"], **r)
        outcomes += [{**r, "stage": stage["stage"], "subscription": stage["subs"][r["set"]]} for r in results]
        stage_failed = sum(1 for r in results if r["code"] != 0)
        started, failed = started + len(results), failed + stage_failed
        emit("stage_finished", stage=stage["stage"], failed=stage_failed)
        if any(r.get("state") == "aborted" for r in results):  # `fleet abort` stopped sets in flight
            emit("fleet_aborted", stage=stage["stage"])
            return {"state": "aborted", "sets": outcomes}
        if spec.halts(failed, started):
            reason = f"{failed} of {started} scale set(s) failed, more than the fleet's halt rule allows"
            emit("fleet_halted", stage=stage["stage"], reason=reason)
            return {"state": "halted", "reason": reason, "sets": outcomes}
        if stage["bake"] and n < len(plan):
            emit("bake_started", stage=stage["stage"], seconds=stage["bake"])
            left = float(stage["bake"])
            while left > 0:  # in slices: `fleet abort` ends a bake within one
                if _control(emit) == "abort":
                    emit("fleet_aborted", stage=stage["stage"], baking=True)
                    return {"state": "aborted", "sets": outcomes}
                _bake(connection, min(left, BAKE_SLICE))
                left -= BAKE_SLICE
            emit("bake_finished", stage=stage["stage"])
    emit("fleet_succeeded", sets=started)
    return {"state": "succeeded", "sets": outcomes}


def _control(emit) -> str | None:
    """`fleet pause`/`resume`/`abort` arrive as messages. A pause holds here (a durable wait) until resume or
    abort; returns "abort" when the fleet is to stop starting sets."""
    message = DBOS.recv("control", timeout_seconds=0)
    if message == "pause":
        emit("fleet_paused")
        while message not in ("resume", "abort"):
            message = DBOS.recv("control", timeout_seconds=3600)
        if message == "resume":
            emit("fleet_resumed")
    return "abort" if message == "abort" else None


def _run_stage(stage: dict, connection: dict, journal: str, change: dict, policy: dict, budget: dict,
               emit) -> list[dict]:
    """The stage's sets on the sets queue, at most the stage's concurrency in flight: a sliding window, so a
    slow set holds one place rather than a whole wave. Results in the stage's order. A pause holds the next
    set back; an abort starts no more (the sets in flight stop their own batches, asked through the journal)."""
    waiting = list(stage["sets"])
    running: dict[str, object] = {}
    done: dict[str, dict] = {}
    while waiting or running:
        if waiting and _control(emit) == "abort":
            done.update({k: {"set": k, "state": "aborted", "code": 3, "error": "the fleet was aborted"}
                         for k in waiting})
            waiting = []
        while waiting and len(running) < stage["concurrency"]:
            key = waiting.pop(0)
            running[key] = DBOS.enqueue_workflow(SETS_QUEUE, set_workflow,
                                                 {**connection, "subscription": stage["subs"][key]}, journal, key,
                                                 change, policy, budget)
        if not running:
            break
        finished = DBOS.wait_first(list(running.values()), polling_interval_sec=0.2)
        key = next(k for k, h in running.items() if h.workflow_id == finished.workflow_id)
        done[key] = finished.get_result()
        del running[key]
    return [done[k] for k in stage["sets"]]


@DBOS.workflow()
def rollback_workflow(fid: str, outcomes: list[dict], connection: dict, journal: str) -> dict:
    """Every set the fleet touched back to its previous image, newest stage first, one stage at a time."""
    def emit(kind: str, **data: object) -> None:
        DBOS.write_stream(EVENTS, {"type": kind, "fleet": fid, "time": _now(connection), **data})

    stages: list[str] = []
    for o in outcomes:
        if o["stage"] not in stages:
            stages.append(o["stage"])
    results = []
    for stage in reversed(stages):
        touched = [o for o in outcomes if o["stage"] == stage and o.get("rollout")]
        emit("rollback_stage_started", stage=stage, sets=[o["set"] for o in touched])
        results += [_rollback_set({**connection, "subscription": o["subscription"]}, journal, o["rollout"])
                    for o in touched]
    emit("fleet_rolled_back", sets=len(results))
    return {"state": "rolled_back", "sets": results}


@DBOS.step(retries_allowed=False)
def _rollback_set(connection: dict, journal: str, rollout_id: str) -> dict:
    from vmssctl import upgrade
    from vmssctl.azure import ScaleSetApi, compute_client
    from vmssctl.rollout.journal import Journal

    jour = Journal(durable.database_or(journal))
    try:
        r = jour.get(rollout_id)
        where = f"{r.resource_group}/{r.name}"
        if r.state == "rolled_back":
            return {"set": where, "state": r.state, "code": 0, "rollout": r.id}
        conn = _connect(connection)
        api = ScaleSetApi(compute_client(conn), r.resource_group, r.name)
        try:
            code = upgrade.resume(api, jour, conn, r, [], rollback=True)
        except VmssctlError as e:
            return {"set": where, "state": "failed", "code": e.exit_code, "error": str(e)}
        finally:
            api.close()
        return {"set": where, "state": jour.get(rollout_id).state, "code": code, "rollout": r.id}
    finally:
        jour.close()


# ------------------------------------------------------------------------------------------ drivers
def plan_json(plans: list[StagePlan]) -> list[dict]:
    return [{"stage": p.stage.name, "sets": [r.key for r in p.sets], "concurrency": p.stage.concurrency,
             "bake": p.stage.bake, "subs": {r.key: r.subscription for r in p.sets}} for p in plans]


def _fleet_to_start(fid: str, lister) -> tuple[str, bool]:
    """(the id, whether to start it): a fleet of this id still running is resumed, not started again; one that
    ended makes a new run of the same file a new fleet. ``lister`` is DBOS's or a client's list_workflows."""
    found = lister(workflow_ids=[fid])
    if found and found[0].status in RUNNING:
        return fid, False
    return (f"{fid}-{len(lister(workflow_id_prefix=fid)) + 1}" if found else fid), True


def start(spec_text: str, plans: list[StagePlan], connection: dict, journal: str) -> str:
    """Start the fleet in this process, or find it running (a second `fleet run` of the same file resumes it)."""
    fid, new = _fleet_to_start(fleet_id(spec_text, connection), DBOS.list_workflows)
    if new:
        with SetWorkflowID(fid):
            DBOS.start_workflow(fleet_workflow, spec_text, plan_json(plans), connection, journal)
    return fid


def hand_to_workers(database: str, spec_text: str, plans: list[StagePlan], connection: dict, journal: str) -> str:
    """Enqueue the fleet for `vmssctl worker` processes sharing ``database`` (no workflow runs here)."""
    from dbos import EnqueueOptions

    c = client(database, f"no vmssctl worker has prepared {database.split('@')[-1]} yet: start one with "
                         "'vmssctl worker --database …'")
    try:
        fid, new = _fleet_to_start(fleet_id(spec_text, connection), c.list_workflows)
        if new:
            options: EnqueueOptions = {"queue_name": FLEETS_QUEUE, "workflow_name": fleet_workflow.__qualname__,
                                       "workflow_id": fid, "app_version": APP_VERSION}
            c.enqueue(options, spec_text, plan_json(plans), connection, journal)
        return fid
    finally:
        c.destroy()


def events(fid: str):
    """The fleet's events as they come, until it ends."""
    if DBOS.get_workflow_status(fid):
        yield from DBOS.read_stream(fid, EVENTS)


def plan_of(status) -> list[dict]:
    """The stages a fleet was started with, from its workflow's recorded input."""
    args = status.input.get("args", []) if isinstance(status.input, dict) else []
    return args[1] if len(args) > 1 else []


def snapshot(c, fid: str) -> list[dict]:
    """The events a fleet has written so far (a running fleet's too: it does not wait for the end)."""
    out: list[dict] = []
    while True:
        try:
            out.append(c.read_stream_offset(fid, EVENTS, len(out), timeout_seconds=0.2))
        except Exception:  # nothing at that offset (yet): what there is, is all
            return out


def result(fid: str) -> dict:
    return DBOS.retrieve_workflow(fid).get_result()


def rollback(fid: str, connection: dict, journal: str) -> dict:
    outcome = result(fid)
    with SetWorkflowID(f"{fid}-rollback"):
        handle = DBOS.start_workflow(rollback_workflow, fid, outcome["sets"], connection, journal)
    return handle.get_result()
