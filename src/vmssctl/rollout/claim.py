"""Which process drives a scale set's rollout right now: an exclusive lock that dies with its holder.

Taken by the process running the set's engine (a terminal's ``vmssctl upgrade``, a fleet's step, a worker)
where the journal is. Beside a SQLite journal: one file per scale set, locked with ``flock``; the kernel drops
the lock when the process ends, kill -9 included, so nothing expires, is renewed or has to be reaped (the
journal's old lease named a pid, which a zombie or a reused pid could keep looking alive). ``flock`` locks
belong to an open file, so two threads of one process conflict too. In a PostgreSQL journal (workers on
several machines): a session-level advisory lock on a connection of its own, which PostgreSQL drops when that
connection ends (the process died, its machine went away). Across journals the set's ``vmssctl-rollout`` tag
is the claim.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from vmssctl.errors import UsageError
from vmssctl.rollout.journal import Journal, Rollout

TRIES = 10  # a probe (``holder``) holds a shared lock for microseconds: taking the claim retries briefly


def _path(journal: Journal, key: str) -> Path:
    assert journal.path is not None
    return journal.path.parent / "claims" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.lock"


def _pg_key(key: str) -> int:
    """The advisory lock's key: 64 bits of the set's key, signed as PostgreSQL's bigint is."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


class Claim:
    """Held while this process drives ``key``'s rollout ``rid``; ``release`` (or the process's end) lets go."""

    def __init__(self, handle) -> None:
        self._handle = handle  # the locked file, or the PostgreSQL connection holding the advisory lock

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # a file stays: deleting it would race with the next process opening it
            self._handle = None


def _tries(attempt: Callable[[], bool]) -> bool:
    """``attempt`` up to TRIES times, 20 ms apart, until it succeeds: a probe holds the lock only for an instant."""
    for n in range(TRIES):
        if attempt():
            return True
        if n < TRIES - 1:
            time.sleep(0.02)
    return False


def _refuse(other: dict) -> UsageError:
    return UsageError(f"rollout {other.get('rollout', '?')} is being run by process {other.get('pid', '?')} on "
                      f"{other.get('host', '?')} right now: watch it with 'vmssctl rollout status "
                      f"{other.get('rollout', '')}', or pause/abort it")


def _me(rid: str) -> dict:
    return {"rollout": rid, "pid": os.getpid(), "host": socket.gethostname()}


def take(journal: Journal, key: str, rid: str) -> Claim:
    """Claim the scale set for rollout ``rid``, or refuse with who holds it."""
    if journal.url:
        return _take_pg(journal, key, rid)
    path = _path(journal, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 - held for as long as the rollout runs
    except OSError as e:
        raise UsageError(f"cannot open the claim file {path}: {e}") from None
    def lock() -> bool:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    if not _tries(lock):
        handle.close()
        raise _refuse(_read(path))
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(_me(rid)))
    handle.flush()
    return Claim(handle)


_sessions: dict[str, object] = {}  # URL -> this process's session holding its claims in that database
_held: set[tuple[str, int]] = set()  # (URL, lock key) this process holds: a session's advisory locks are re-entrant
_lock = threading.Lock()


class _Advisory:
    """One set's advisory lock on the process's claims session; ``close`` lets it go."""

    def __init__(self, url: str, key: int) -> None:
        self.url, self.key = url, key

    def close(self) -> None:
        with _lock:
            _held.discard((self.url, self.key))
            session = _sessions.get(self.url)
            if session is not None and not session.closed:  # type: ignore[attr-defined]
                session.execute("SELECT pg_advisory_unlock(%s)", (self.key,))  # type: ignore[attr-defined]


def _take_pg(journal: Journal, key: str, rid: str) -> Claim:
    """An advisory lock on one session of the process's own, which holds the locks of every set it drives (a
    worker driving a hundred sets holds one connection for them, not a hundred): PostgreSQL drops them all when
    that session ends."""
    import psycopg

    url, lock = journal.url, _pg_key(key)
    assert url is not None
    with _lock:
        try:
            session = _sessions.get(url)
            if session is None or session.closed:  # type: ignore[attr-defined]
                session = _sessions[url] = psycopg.connect(url, autocommit=True, connect_timeout=10,
                                                           options="-c search_path=vmssctl")
        except psycopg.Error as e:
            raise UsageError(f"cannot reach the journal at {journal.where}: {str(e).splitlines()[0][:200]}") from None
        got = (url, lock) not in _held and _tries(
            lambda: session.execute("SELECT pg_try_advisory_lock(%s)", (lock,)).fetchone()[0])  # type: ignore
        if not got:
            row = session.execute("SELECT rollout_id, pid, host FROM claims WHERE scale_set = %s",  # type: ignore
                                  (key,)).fetchone()
            raise _refuse(dict(zip(("rollout", "pid", "host"), row, strict=True)) if row else {})
        _held.add((url, lock))
        me = _me(rid)
        session.execute("INSERT INTO claims (scale_set, rollout_id, pid, host) VALUES (%s, %s, %s, %s) ON "  # type: ignore
                        "CONFLICT (scale_set) DO UPDATE SET rollout_id = excluded.rollout_id, pid = excluded.pid, "
                        "host = excluded.host", (key, rid, me["pid"], me["host"]))
    return Claim(_Advisory(url, lock))


def holder(journal: Journal, key: str) -> str | None:
    """The rollout some live process is driving on ``key`` right now, or None."""
    if journal.url:
        return _holder_pg(journal, key)
    path = _path(journal, key)
    try:
        handle = open(path)  # noqa: SIM115
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(path).get("rollout") or "?"
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


def _holder_pg(journal: Journal, key: str) -> str | None:
    """A shared advisory lock, taken and let go at once, conflicts with a holder's exclusive one."""
    db = journal.db
    if db.execute("SELECT pg_try_advisory_lock_shared(%s) AS free", (_pg_key(key),)).fetchone()["free"]:
        db.execute("SELECT pg_advisory_unlock_shared(%s)", (_pg_key(key),))
        return None
    row = db.execute("SELECT rollout_id FROM claims WHERE scale_set = %s", (key,)).fetchone()
    return (row or {}).get("rollout_id") or "?"


def running(journal: Journal, rollout: Rollout) -> bool:
    """Is some live process driving ``rollout`` right now? (A set has one active rollout at most, so the holder
    of an active rollout's set is running it, even in the instant before it has written its name.)"""
    h = holder(journal, rollout.scale_set)
    return h is not None and (h == rollout.id or rollout.active)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
