"""`vmssctl worker`: a process that runs fleets from a shared PostgreSQL database, and takes over a dead one's.

Every worker is a DBOS executor with its own id: it takes fleets from the fleets queue and sets from the
sets queue. DBOS recovers a restarted executor's own workflows, but nothing tells the others when a worker
is gone for good (its machine died, it was killed) without DBOS's hosted control plane, so the workers keep
heartbeats in a table of the same database: a worker whose heartbeat is older than ``--takeover-after``
is claimed by exactly one live worker (a conditional UPDATE), which recovers its unfinished workflows.
Its sets' rollouts resume where ARM says they are (the engine is level-triggered). The same count of live
workers splits each subscription's request budget between them.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
import time

from vmssctl.errors import UsageError

HEARTBEAT = 5.0  # default seconds between a worker's heartbeats (real time: it is about processes, not rollouts)
BEATS_BEFORE_DEAD = 3  # silent for less than three heartbeats is not dead (a slow query, a busy host)
log = logging.getLogger("vmssctl.worker")

SCHEMA_LOCK = 7_412_605_311  # an advisory lock serialising the table's creation by workers starting together
SCHEMA = """CREATE TABLE IF NOT EXISTS vmssctl_workers (
    executor_id TEXT PRIMARY KEY, host TEXT, beat DOUBLE PRECISION NOT NULL, taken_by TEXT)"""


def engine_for(database: str):
    import sqlalchemy

    if not database.startswith("postgresql://"):
        raise UsageError("workers share a PostgreSQL database: --database postgresql://USER@HOST:PORT/DB (SQLite "
                         "is for one process: run the fleet with 'vmssctl fleet run' instead)")
    return sqlalchemy.create_engine("postgresql+psycopg://" + database.removeprefix("postgresql://"),
                                    pool_pre_ping=True)


class TakenOver(Exception):
    """Another worker declared this one dead and recovered its workflows: stop, or they would run twice."""


def _now(db) -> float:
    """The database's clock: the workers' heartbeats are compared on one clock, whatever their machines' say."""
    import sqlalchemy as sa

    return float(db.execute(sa.text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")).scalar_one())


def register(engine, me: str) -> str | None:
    """This worker's row, at its start: a worker restarted under its own id rejoins (its unfinished workflows,
    if another worker took it over meanwhile, were handed to that one). Returns who had taken it over."""
    import sqlalchemy as sa

    with engine.begin() as db:
        db.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK})  # workers starting together
        db.execute(sa.text(SCHEMA))
        row = db.execute(sa.text("SELECT taken_by FROM vmssctl_workers WHERE executor_id = :me FOR UPDATE"),
                         {"me": me}).first()
        db.execute(sa.text(
            "INSERT INTO vmssctl_workers (executor_id, host, beat, taken_by) VALUES (:me, :host, :now, NULL) "
            "ON CONFLICT (executor_id) DO UPDATE SET beat = :now, host = :host, taken_by = NULL"),
            {"me": me, "host": socket.gethostname(), "now": _now(db)})
    return row[0] if row is not None else None


def beat(engine, me: str, takeover_after: float, watching_since: float | None) -> tuple[list[str], int, float]:
    """Record this worker's heartbeat; claim the workers silent for longer than ``takeover_after``. Returns the
    executor ids this worker claimed (each is claimed by exactly one worker), how many workers are alive, and
    the database's time.

    ``watching_since``: when this worker's connection to the database last came up (the database's time; None
    on the first beat since). A worker claims others only once it has watched for ``takeover_after`` itself:
    after the database was down, every worker's last beat is old, and the first to reconnect would otherwise
    take over all the others, alive as they are. Raises TakenOver when another worker already claimed this one
    (it was silent too long: paused, cut off from the database)."""
    import sqlalchemy as sa

    with engine.begin() as db:
        now = _now(db)
        row = db.execute(sa.text("SELECT taken_by FROM vmssctl_workers WHERE executor_id = :me"),
                         {"me": me}).first()
        if row is not None and row[0] is not None:
            raise TakenOver(row[0])
        db.execute(sa.text(
            "INSERT INTO vmssctl_workers (executor_id, host, beat, taken_by) VALUES (:me, :host, :now, NULL) "
            "ON CONFLICT (executor_id) DO UPDATE SET beat = :now, host = :host"),
            {"me": me, "host": socket.gethostname(), "now": now})
    claimed = []
    cutoff = now - takeover_after
    with engine.begin() as db:
        if watching_since is not None and now - watching_since >= takeover_after:
            dead = [r[0] for r in db.execute(sa.text(
                "SELECT executor_id FROM vmssctl_workers WHERE beat < :cutoff AND taken_by IS NULL "
                "AND executor_id <> :me"), {"cutoff": cutoff, "me": me})]
            for other in dead:
                won = db.execute(sa.text(
                    "UPDATE vmssctl_workers SET taken_by = :me WHERE executor_id = :other AND taken_by IS NULL "
                    "AND beat < :cutoff"), {"me": me, "other": other, "cutoff": cutoff}).rowcount
                if won == 1:
                    claimed.append(other)
        alive = db.execute(sa.text("SELECT count(*) FROM vmssctl_workers WHERE beat >= :cutoff AND taken_by IS NULL"),
                           {"cutoff": cutoff}).scalar_one()
    return claimed, int(alive), now


def serve(database: str, executor_id: str, takeover_after: float, heartbeat: float = HEARTBEAT,
          stop: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT: take fleets and sets, heartbeat, take over dead workers' workflows. A database
    that goes away is waited out (DBOS blocks its own calls meanwhile, and so do the journal and the claims):
    the worker keeps its identity and its workflows, and says when the database went and came back."""
    from dbos import DBOS

    from vmssctl import budget, durable, reconnect
    from vmssctl.fleet import run

    engine = engine_for(database)
    stop = stop or threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    where = database.split("@")[-1]
    previous = reconnect.patiently(lambda: register(engine, executor_id), f"worker {executor_id}")
    if previous:
        print(f"worker {executor_id} rejoins: worker {previous} had taken over its unfinished workflows", flush=True)
    run.launch(database, executor_id, fleets=True)
    run.log_sets()
    print(f"vmssctl worker {executor_id}: taking fleets from {where}; takes over a worker silent "
          f"for {takeover_after:.0f}s", flush=True)
    watching_since: float | None = None
    lost_at: float | None = None
    try:
        while not stop.is_set():
            try:
                claimed, alive, now = beat(engine, executor_id, takeover_after, watching_since)
            except TakenOver:
                raise
            except Exception as e:
                if not reconnect.is_disconnect(e):
                    raise
                if lost_at is None:
                    lost_at = time.monotonic()
                    print(f"worker {executor_id}: the database at {where} is unreachable "
                          f"({reconnect.first_line(e)}); waiting for it, work in flight waits too", flush=True)
                watching_since = None
                stop.wait(heartbeat)
                continue
            if lost_at is not None:
                print(f"worker {executor_id}: the database is back after {time.monotonic() - lost_at:.0f}s; "
                      "carrying on", flush=True)
                lost_at = None
            if watching_since is None:
                watching_since = now
            budget.share(alive)  # the workers together stay within each subscription's request budget
            for other in claimed:
                handles = DBOS._recover_pending_workflows([other])
                print(f"took over worker {other}: {len(handles)} unfinished workflow(s)", flush=True)
            stop.wait(heartbeat)
    except TakenOver as e:
        print(f"worker {e} took over this worker's fleets (its heartbeat was late): stopping so that nothing runs "
              "twice; start it again (with the same --executor-id, it rejoins)", file=sys.stderr, flush=True)
        durable.abandon()  # sets in flight here are the other worker's now: end at once, as a crash would
        return 1
    finally:
        if not durable.abandoned():
            durable.shutdown()
        engine.dispose()
    return 0
