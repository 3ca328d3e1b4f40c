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


def beat(engine, me: str, takeover_after: float) -> tuple[list[str], int]:
    """Record this worker's heartbeat; claim the workers silent for longer than ``takeover_after``. Returns the
    executor ids this worker claimed (each is claimed by exactly one worker) and how many workers are alive.
    Raises TakenOver when another worker already claimed this one (it was silent too long, e.g. paused)."""
    import sqlalchemy as sa

    now = time.time()
    with engine.begin() as db:
        db.execute(sa.text(SCHEMA))
        row = db.execute(sa.text("SELECT taken_by FROM vmssctl_workers WHERE executor_id = :me"),
                         {"me": me}).first()
        if row is not None and row[0] is not None:
            raise TakenOver(row[0])
        db.execute(sa.text(
            "INSERT INTO vmssctl_workers (executor_id, host, beat, taken_by) VALUES (:me, :host, :now, NULL) "
            "ON CONFLICT (executor_id) DO UPDATE SET beat = :now, host = :host"),
            {"me": me, "host": socket.gethostname(), "now": now})
    claimed = []
    with engine.begin() as db:
        dead = [r[0] for r in db.execute(sa.text(
            "SELECT executor_id FROM vmssctl_workers WHERE beat < :cutoff AND taken_by IS NULL AND executor_id <> :me"),
            {"cutoff": now - takeover_after, "me": me})]
        for other in dead:
            won = db.execute(sa.text(
                "UPDATE vmssctl_workers SET taken_by = :me WHERE executor_id = :other AND taken_by IS NULL "
                "AND beat < :cutoff"), {"me": me, "other": other, "cutoff": now - takeover_after}).rowcount
            if won == 1:
                claimed.append(other)
        alive = db.execute(sa.text("SELECT count(*) FROM vmssctl_workers WHERE beat >= :cutoff AND taken_by IS NULL"),
                           {"cutoff": now - takeover_after}).scalar_one()
    return claimed, int(alive)


def serve(database: str, executor_id: str, takeover_after: float, heartbeat: float = HEARTBEAT,
          stop: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT: take fleets and sets, heartbeat, take over dead workers' workflows."""
    from dbos import DBOS

    from vmssctl import budget, durable
    from vmssctl.fleet import run

    engine = engine_for(database)
    stop = stop or threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run.launch(database, executor_id, fleets=True)
    print(f"vmssctl worker {executor_id}: taking fleets from {database.split('@')[-1]}; takes over a worker silent "
          f"for {takeover_after:.0f}s", flush=True)
    try:
        while not stop.is_set():
            claimed, alive = beat(engine, executor_id, takeover_after)
            budget.share(alive)  # the workers together stay within each subscription's request budget
            for other in claimed:
                handles = DBOS._recover_pending_workflows([other])
                print(f"took over worker {other}: {len(handles)} unfinished workflow(s)", flush=True)
            stop.wait(heartbeat)
    except TakenOver as e:
        print(f"worker {e} took over this worker's fleets (its heartbeat was late): stopping so that nothing runs "
              "twice; start it again with another --executor-id", file=sys.stderr, flush=True)
        return 1
    finally:
        durable.shutdown()
        engine.dispose()
    return 0
