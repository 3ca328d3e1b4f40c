"""DBOS, vmssctl's durable-execution engine: starting it on a system database, and clients.

Every rollout runs as a DBOS workflow: a fleet and its sets in the fleet database, a single ``vmssctl
upgrade`` in its scale set's own SQLite database (``rollout/workflow.py``). DBOS records the workflows and
their steps and, when vmssctl starts again on the same database, recovers those a crash interrupted.

DBOS is one instance per process, on one database at a time. On SQLite one process at a time may use a
database: a second would recover, and run again, the first's unfinished workflows. An exclusive lock on a
file beside it keeps it so; the kernel drops it when the process ends, kill -9 too. PostgreSQL is shared by
workers with their own executor ids (``fleet/worker.py``).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import IO

from dbos import DBOS, DBOSConfig

from vmssctl import __version__, reconnect, storage
from vmssctl.errors import UsageError

# the application version is vmssctl's: a workflow interrupted by a crash is recovered by the same release
# (by default DBOS derives it from the code, and would not recover across any change of it)
APP_VERSION = f"vmssctl-{__version__}"
QUEUE_POLL = 0.25  # seconds between a process's looks at the sets' queue (DBOS's default is 1 s; a set starts sooner)
FLEET_QUEUE_POLL = 1.0  # ... at the fleets' queue (DBOS's default: a fleet handed to the workers starts within 1 s)
# seconds DBOS's PostgreSQL notifier gathers messages and events before it sends them (a reader waiting on one hears
# of it that much later at most). Its default of 0.01 woke a thread 100 times a second in every process: 12 ms of
# CPU a second in an idle worker
NOTIFY_COALESCE = 0.05
NOTIFY_POLL = 0.1  # seconds between DBOS's looks for messages and events on SQLite (its default is 1 s)
_state: dict = {}


def default_database(journal: str) -> str:
    """The fleets' system database where the rollout journal is: SQLite beside its file (nothing to install), or
    its PostgreSQL database."""
    if journal.startswith("postgresql://"):
        return journal
    return f"sqlite:///{Path(journal).expanduser().resolve().with_name('fleets.sqlite')}"


def launch(database: str, executor_id: str | None = None, busy: str | None = None) -> None:
    """Start DBOS on ``database`` (it recovers the unfinished workflows recorded there for this executor).
    ``busy``: what to say when another process already uses this SQLite database."""
    if _state.get("database") == database:
        return
    if _state:
        raise UsageError(f"this process already runs workflows from {_state['database'].split('@')[-1]}")
    if database.startswith("sqlite:///"):
        path = Path(database.removeprefix("sqlite:///"))
        if not path.parent.is_dir():
            raise UsageError(f"the workflow database {path}: its directory does not exist (create it, or use a file "
                             "elsewhere)")
        _state["lock"] = _exclusive(str(path), busy)
    # DBOS logs a workflow's exception with its traceback before handing it back; vmssctl reports it in one line
    level = "WARNING" if os.environ.get("VMSSCTL_DEBUG") else "CRITICAL"
    dbos_log = logging.getLogger("dbos")
    dbos_log.setLevel(level)
    for handler in dbos_log.handlers:  # DBOS's console handler keeps the stderr it first saw: give it today's
        if handler.name == "__dbos_console_log_handler__" and isinstance(handler, logging.StreamHandler):
            handler.stream = sys.stderr  # (not setStream: it flushes the old one, which may be closed)
    config: DBOSConfig = {"name": "vmssctl", "system_database_url": database, "run_admin_server": False,  # type: ignore[typeddict-unknown-key]
                          "log_level": level, "console_log_level": level, "application_version": APP_VERSION,
                          # SQLite has no LISTEN/NOTIFY: DBOS polls for messages and events, and its shutdown waits
                          # out one poll (DBOS's default of 1 s added a second to every `vmssctl upgrade`)
                          "notification_listener_polling_interval_sec": NOTIFY_POLL,
                          "notification_coalesce_sec": NOTIFY_COALESCE}
    if executor_id:
        config["executor_id"] = executor_id
    _state["database"] = database
    try:
        DBOS(config=config)
        DBOS.launch()
    except Exception as e:
        shutdown()
        bad = storage.error(e, f"the workflow database {database.split('@')[-1].removeprefix('sqlite:///')}",
                            database.removeprefix("sqlite:///") if database.startswith("sqlite:///") else None)
        if bad is not None:
            raise bad from None
        if reconnect.is_disconnect(e):
            raise UsageError(f"cannot reach the workflow database {database.split('@')[-1]}: "
                             f"{reconnect.first_line(e)}") from None
        raise
    except BaseException:
        shutdown()
        raise


THIS_DATABASE = "this-database"  # a workflow input naming the database the process runs workflows from


def database_or(location: str) -> str:
    """``location``, or this process's own database when it says THIS_DATABASE: workflow inputs are stored, so the
    workers' shared database (whose URL may carry a password) is named, not written into them."""
    return _state["database"] if location == THIS_DATABASE and "database" in _state else location


def abandon() -> None:
    """A workflow still runs in DBOS's threads and the process is to end anyway (Ctrl-C): see ``abandoned``."""
    _state["abandoned"] = True


def abandoned() -> bool:
    """Must the process end without waiting for DBOS's threads (``os._exit``)?"""
    return bool(_state.get("abandoned"))


def shutdown() -> None:
    if _state:
        if "database" in _state:
            DBOS.destroy()
        lock = _state.get("lock")
        if lock is not None:
            lock.close()
        _state.clear()


def _exclusive(path: str, busy: str | None) -> IO[str]:
    import fcntl

    try:
        handle = open(f"{path}.lock", "a")  # noqa: SIM115 - held as long as the process uses the database
    except OSError as e:
        raise storage.error(e, f"the workflow database {path}") or UsageError(
            f"cannot open {path}.lock: {e.strerror or e}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UsageError(busy or f"another vmssctl process runs the fleets of {path}: watch with 'vmssctl fleet "
                         "status ID' (or use PostgreSQL and workers to run several)") from None
    return handle


def client(database: str, missing: str | None = None, wait: float | None = None):
    """A DBOS client: reads and steers workflows without running (or recovering) any here. ``missing``: what to
    say when DBOS's tables are not in the database yet. A database that cannot be reached is waited for up to
    ``wait`` seconds (default: ``reconnect.one_shot_wait()``; infinity: as long as it takes), then one clear
    line."""
    from dbos import DBOSClient

    logging.getLogger("dbos").setLevel(logging.CRITICAL)  # its connection errors become the one line below
    where = database.split("@")[-1]

    def attempt():
        try:  # connection errors raise (rather than DBOS blocking on them): this command decides how long to wait
            c = DBOSClient(system_database_url=database, retry_connection_errors=False)
        except Exception as e:  # the database cannot be reached or opened (a SQLite path whose directory is missing)
            if reconnect.is_disconnect(e):
                raise
            bad = storage.error(e, f"the fleet database {where}")
            raise bad or UsageError(f"cannot open the fleet database {where}: "
                                    f"{str(e).splitlines()[0][:200]}") from None
        try:
            c.list_workflows(limit=1)
        except Exception as e:
            c.destroy()
            if reconnect.is_disconnect(e):
                raise
            raise UsageError(missing or f"no fleet has run on {where} yet") from None
        return c
    give_up = reconnect.one_shot_wait() if wait is None else None if wait == float("inf") else wait
    try:
        return reconnect.patiently(attempt, f"the fleet database {where}", give_up_after=give_up)
    except reconnect.DatabaseUnreachable as e:
        raise UsageError(f"cannot reach the fleet database {where}: {reconnect.first_line(e)}") from None


def reading(c, read, what: str):
    """``read()`` through client ``c``, waiting out a database that went away (up to the one-shot wait)."""
    try:
        return reconnect.patiently(read, what, give_up_after=reconnect.one_shot_wait())
    except reconnect.DatabaseUnreachable as e:
        raise UsageError(str(e)) from None
