"""One scale set's rollout as a DBOS workflow: a lone ``vmssctl upgrade`` runs the way a fleet's sets do.

The workflow has one step, which runs vmssctl's level-triggered engine on the rollout the journal records:
a step runs at least once, and running the engine again is resuming it. Each scale set has its own SQLite
system database beside the journal (``rollouts/``): DBOS is one process per SQLite database, and a lone
upgrade is one process per set, so two terminals upgrading two sets never contend, and running the command
again after a kill -9 is DBOS recovering the set's interrupted workflow when it starts, in the terminal that
ran it again. The journal stays the record of what the rollout intends and did (its batches, events and
progress, which every view reads); DBOS records that the rollout is running and carries it through crashes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from dbos import DBOS, SetWorkflowID

from vmssctl import durable
from vmssctl.errors import EXIT_FAILED, EXIT_OK, UsageError
from vmssctl.rollout.journal import MOVING, Journal, Rollout, data_dir

LIVE: dict[str, tuple] = {}  # rollout id -> (gateway, connection, sinks, clock, journal) of the command running it
WAIT_POLL = 0.05  # seconds between looks at a workflow this process waits for (DBOS: 1 s, the end of every run)


def database(journal: Journal, rollout: Rollout) -> str:
    """The scale set's own system database: beside a SQLite journal, in the user data dir beside a PostgreSQL one
    (a lone rollout runs on this machine, whichever journal records it)."""
    if journal.path:  # in the journal's directory: one database per set there
        where, name = Path(journal.location).parent, hashlib.sha256(rollout.scale_set.encode()).hexdigest()[:24]
    else:
        where, name = data_dir(), hashlib.sha256(f"{journal.location}|{rollout.scale_set}".encode()).hexdigest()[:24]
    return f"sqlite:///{where / 'rollouts' / name}.sqlite"


@DBOS.step(retries_allowed=False)
def _drive(journal: str, rid: str) -> int | None:
    """Run the engine on rollout ``rid`` until it ends; None when the journal says it is not to run (paused,
    aborted or ended while no process ran it)."""
    from vmssctl import upgrade

    live = LIVE.get(rid)
    try:
        jour = Journal(live[4] if live else journal)  # the command's own journal location (with its password)
    except UsageError:
        if live:
            raise
        return None  # an earlier rollout's run whose journal this process cannot open: not this command's
    try:
        r = jour.get(rid)
        if r.state not in MOVING:
            return None
        if live is not None:  # the command that asked for it, in this process: its connection, live view, clock
            api, conn, sinks, clock, _ = live
            return upgrade.run(api, jour, conn, r, sinks, clock)
        from vmssctl.azure import ScaleSetApi, compute_client, connection_from_json

        conn = connection_from_json(r.connection or {})  # recovered for an earlier command: connect as it did
        api = ScaleSetApi(compute_client(conn), r.resource_group, r.name)
        try:
            return upgrade.run(api, jour, conn, r, [])
        finally:
            api.close()
    finally:
        jour.close()


@DBOS.workflow()
def rollout_workflow(journal: str, rid: str) -> int | None:
    return _drive(journal, rid)


def drive(journal: Journal, conn, api, rollout: Rollout, sinks: list, clock=None) -> int:
    """Run (or resume) ``rollout`` to its end as a workflow in its scale set's database; the exit code.

    DBOS first recovers what a crash left unfinished in that database (this rollout's earlier run, typically:
    its step runs the engine again, which resumes it); then, unless that finished it, a new run starts."""
    where = f"{rollout.resource_group}/{rollout.name}"
    LIVE[rollout.id] = (api, conn, sinks, clock, journal.location)
    try:
        db = database(journal, rollout)
        Path(db.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        LIVE.pop(rollout.id, None)
        raise UsageError(f"cannot create the rollout database for {journal.where}: {e}") from None
    durable.launch(db, busy=f"another vmssctl process is running a rollout of {where} right now: watch it with "
                            f"'vmssctl rollout status {rollout.id}'")
    try:
        code: int | None = None
        ran = False
        for w in DBOS.list_workflows(status=["PENDING", "ENQUEUED"]):  # recovered as DBOS started
            result: int | None = DBOS.retrieve_workflow(w.workflow_id).get_result(polling_interval_sec=WAIT_POLL)
            if w.workflow_id.split(".")[0] == rollout.id:
                code, ran = result, True
        if not ran or journal.get(rollout.id).state in MOVING:
            runs = len(DBOS.list_workflows(workflow_id_prefix=rollout.id))
            with SetWorkflowID(rollout.id if runs == 0 else f"{rollout.id}.{runs + 1}"):
                # in DBOS's thread, as a recovered run is: this one waits, and a Ctrl-C here leaves it as a crash
                code = DBOS.start_workflow(rollout_workflow, journal.stored_location, rollout.id).get_result(
                    polling_interval_sec=WAIT_POLL)
        if code is None:  # settled while no process ran it
            code = EXIT_OK if journal.get(rollout.id).state == "succeeded" else EXIT_FAILED
        return code
    except KeyboardInterrupt:
        durable.abandon()  # the engine goes on in DBOS's thread until the process ends: not shut down under it
        raise
    finally:
        LIVE.pop(rollout.id, None)
        if not durable.abandoned():
            durable.shutdown()
