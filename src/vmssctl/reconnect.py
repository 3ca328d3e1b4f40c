"""Riding out a database that goes away for a while.

PostgreSQL restarts are routine (a minor upgrade, a managed server's failover, a network hiccup): every
connection breaks at once and the server is back seconds or a minute later. DBOS already blocks and retries
its own calls through such an outage; vmssctl's own connections (the journal, the claims, the workers'
heartbeats, a watcher's reads) do the same here: a broken connection is never a failed rollout or a dead
worker, only a pause. Long-lived work waits as long as it takes; a one-shot command (``fleet status``) waits a
bounded time and then says in one line that the database cannot be reached.

What counts as "gone" is a connection-level failure, never a statement the database refused (a constraint, a
syntax error): those are bugs or bad input and are raised at once.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from vmssctl.errors import VmssctlError

T = TypeVar("T")
log = logging.getLogger("vmssctl.database")
FIRST_WAIT, LONGEST_WAIT = 0.5, 2.0  # seconds between attempts: doubling from the first to the longest
ONE_SHOT_WAIT = 30.0  # how long a one-shot command (status, approve) waits for an unreachable database


def one_shot_wait() -> float:
    """Seconds a one-shot command waits for an unreachable database: $VMSSCTL_DB_WAIT (0 to 3600), else 30."""
    raw = os.environ.get("VMSSCTL_DB_WAIT")
    if raw is None:
        return ONE_SHOT_WAIT
    from vmssctl.inputs import duration

    return duration(raw, "VMSSCTL_DB_WAIT", 3600)


class DatabaseUnreachable(VmssctlError):
    """The database stayed unreachable for longer than the caller would wait (nothing was changed by the call)."""


def is_disconnect(e: BaseException) -> bool:
    """Is ``e`` a lost or refused connection (worth waiting out), rather than a statement the database refused?"""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg comes with DBOS
        psycopg = None  # type: ignore[assignment]
    orig = getattr(e, "orig", None)  # SQLAlchemy wraps the driver's exception
    if getattr(e, "connection_invalidated", False):
        return True
    for err in (e, orig):
        if err is None or psycopg is None:
            continue
        if isinstance(err, psycopg.OperationalError | psycopg.InterfaceError):
            code = getattr(err, "sqlstate", None) or ""
            # a query cancelled (statement timeout) or a lock not available is an answer, not an outage
            return not code.startswith(("57014", "55P03"))
    return False


def first_line(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e).strip().splitlines()
    return (text[0] if text else e.__class__.__name__)[:200]


_waiting: dict[str, int] = {}  # what -> how many threads of this process wait for it now: the first says so
_waiting_lock = threading.Lock()


def patiently(attempt: Callable[[], T], what: str, give_up_after: float | None = None,
              on_lost: Callable[[], None] | None = None, sleep: Callable[[float], None] = time.sleep,
              now: Callable[[], float] = time.monotonic, first_failure: BaseException | None = None) -> T:
    """``attempt()``, again and again while the database is unreachable, with a growing pause between tries.

    ``on_lost`` runs after each failure (e.g. to drop the broken connection so the next attempt makes a new
    one). ``give_up_after``: seconds after the first failure to stop trying and raise DatabaseUnreachable;
    None waits for as long as it takes. An outage is logged once for ``what`` however many threads wait it out
    (the first to wait says it went, the last to get through says it is back). ``first_failure``: the caller's
    own call already failed with it (the wait starts at once)."""
    started: float | None = None
    pause = FIRST_WAIT
    try:
        while True:
            try:
                if first_failure is not None:
                    failed, first_failure = first_failure, None
                    raise failed
                result = attempt()
            except Exception as e:
                if not is_disconnect(e):
                    raise
                if on_lost is not None:
                    on_lost()
                if started is None:
                    started = now()
                    with _waiting_lock:
                        _waiting[what] = _waiting.get(what, 0) + 1
                        first = _waiting[what] == 1
                    if first:
                        log.warning("%s: the database is unreachable (%s); retrying", what, first_line(e))
                elif give_up_after is not None and now() - started >= give_up_after:
                    raise DatabaseUnreachable(f"{what}: the database was unreachable for {now() - started:.0f}s "
                                              f"({first_line(e)})") from None
                if give_up_after is not None and give_up_after <= 0:
                    raise DatabaseUnreachable(f"{what}: the database is unreachable ({first_line(e)})") from None
                sleep(pause * (0.75 + random.random() / 2))
                pause = min(pause * 2, LONGEST_WAIT)
                continue
            if started is not None and _done(what):
                log.warning("%s: the database is back after %.0fs", what, now() - started)
            started = None
            return result
    finally:
        if started is not None:
            _done(what)


def _done(what: str) -> bool:
    """One waiter for ``what`` is through; was it the last?"""
    with _waiting_lock:
        _waiting[what] = max(0, _waiting.get(what, 1) - 1)
        return _waiting[what] == 0
