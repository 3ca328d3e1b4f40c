"""Which process drives a scale set's rollout right now: an exclusive lock that dies with its holder.

Taken by the process running the set's engine (a terminal's ``vmssctl upgrade``, a fleet's step, a worker)
where the journal is. In a SQLite journal: a lock on one byte of the journal file itself, the set's own byte
far beyond anything SQLite locks (an "open file description" lock, Linux's F_OFD_SETLK): the kernel drops it
when the process ends, kill -9 included, so nothing expires, is renewed or has to be reaped (the journal's
old lease named a pid, which a zombie or a reused pid could keep looking alive). Nothing beside the journal
can be deleted to lose it; who holds a set is also written to ``claims/`` beside the journal, for messages
only. The process opens the journal file once for these locks and never closes that descriptor: closing any
descriptor of a file drops every POSIX lock the process holds on it, which would pull SQLite's own locks from
under its connections. Locks of one open file do not conflict with each other, so the process keeps its own
claims in a set too (two threads of one process conflict, as two processes do). (Where OFD locks do not exist,
a file in ``claims/`` is the lock, with ``flock``, and its identity is checked every turn.) In a PostgreSQL
journal (workers on several machines): a session-level advisory lock on a connection of its own, which
PostgreSQL drops when that connection ends (the process died, its machine went away). Across journals the
set's ``vmssctl-rollout`` tag is the claim.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from vmssctl import reconnect
from vmssctl.errors import UsageError, VmssctlError
from vmssctl.rollout.journal import Journal, Rollout

TRIES = 10  # a probe (``holder``) holds a shared lock for microseconds: taking the claim retries briefly
SLOT_BASE = 2**40  # the sets' bytes of the journal file: far beyond SQLite's own locks (at 1 GiB)
SLOT_SPAN = 2**40  # one byte a set (64 bits of its key, folded): two sets share one with odds ~1e-7 in a 1,000
OFD = getattr(fcntl, "F_OFD_SETLK", None) is not None  # Linux 3.15 and later
_FLOCK = "hhqqi4x"  # struct flock on 64-bit Linux: type, whence, start, len, pid (0 for OFD locks)
_lock = threading.RLock()  # the process's own bookkeeping of the claims it holds


def _slot(key: str) -> int:
    return SLOT_BASE + int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % SLOT_SPAN


def _ofd(fd: int, key: str, kind: int, probe: bool = False) -> bool:
    """Take (or with ``probe``, test for) a lock of ``kind`` on the set's byte: False when another holds it."""
    import struct

    request = struct.pack(_FLOCK, kind, os.SEEK_SET, _slot(key), 1, 0)
    if probe:
        answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, request)
        return struct.unpack(_FLOCK, answer)[0] == fcntl.F_UNLCK
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, request)
        return True
    except OSError as e:
        if e.errno in (11, 13):  # EAGAIN / EACCES: held by another
            return False
        raise


def _path(journal: Journal, key: str) -> Path:
    assert journal.path is not None
    return journal.path.parent / "claims" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.lock"


def _pg_key(key: str) -> int:
    """The advisory lock's key: 64 bits of the set's key, signed as PostgreSQL's bigint is."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


class ClaimLost(VmssctlError):
    """Another process drives this set's rollout now (its claim was taken while this one's was gone): stop at once,
    touching nothing, and leave the rollout to it."""


class Claim:
    """Held while this process drives ``key``'s rollout ``rid``; ``release`` (or the process's end) lets go.

    ``check`` (every turn of the engine, and before it writes to ARM) makes sure it still holds it: a lock file
    deleted or replaced under it, or a PostgreSQL session lost with its locks (the database restarted), is taken
    again if nobody else took it meanwhile, and is ClaimLost if somebody did."""

    def __init__(self, handle, key: str, rid: str) -> None:
        self._handle = handle  # the locked file, or the advisory lock on the process's claims session
        self.key, self.rid = key, rid

    def check(self) -> None:
        if self._handle is not None:
            self._handle.check()

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


def _lost(key: str, other: dict) -> ClaimLost:
    return ClaimLost(f"lost the claim on scale set {key} while it was not held (its lock file was removed, or the "
                     f"database restarted): process {other.get('pid', '?')} on {other.get('host', '?')} drives rollout "
                     f"{other.get('rollout', '?')} now; this process stopped without touching anything more")


def _me(rid: str) -> dict:
    return {"rollout": rid, "pid": os.getpid(), "host": socket.gethostname()}


def take(journal: Journal, key: str, rid: str) -> Claim:
    """Claim the scale set for rollout ``rid``, or refuse with who holds it."""
    if journal.url:
        return Claim(_take_pg(journal, key, rid), key, rid)
    path = _path(journal, key)
    if not OFD:
        handle = _lock_file(path, rid)
        if handle is None:
            raise _refuse(_read(path))
        return Claim(_LockFile(path, handle, key, rid), key, rid)
    assert journal.path is not None
    with _lock:
        fd = _journal_fd(journal.path)
        mine = (fd, key)
        if mine in _bytes or not _tries(lambda: _ofd(fd, key, fcntl.F_WRLCK)):
            raise _refuse(_read(path))
        _bytes[mine] = rid
    with contextlib.suppress(OSError):  # who holds it, for messages (the lock is the journal's byte)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_me(rid)))
    return Claim(_JournalByte(journal.path, fd, key), key, rid)


_fds: dict[tuple[int, int], int] = {}  # (device, inode) of a journal file -> this process's descriptor for locks
_bytes: dict[tuple[int, str], str] = {}  # (descriptor, set) this process holds -> the rollout


def _journal_fd(path: Path) -> int:
    """The process's descriptor of the journal file for claims: opened once, never closed (see above)."""
    try:
        st = os.stat(path)
        fd = _fds.get((st.st_dev, st.st_ino))
        if fd is None:
            fd = _fds[(st.st_dev, st.st_ino)] = os.open(path, os.O_RDWR)
        return fd
    except OSError as e:
        raise UsageError(f"cannot open the journal {path} to claim the scale set: {e.strerror or e}") from None


class _JournalByte:
    """The set's byte of the journal file, locked on the process's descriptor of it. ``check``: the journal at its
    path is still the file locked (a journal replaced under a running rollout is another journal: the claim is
    lost)."""

    def __init__(self, path: Path, fd: int, key: str) -> None:
        self.path, self.fd, self.key = path, fd, key

    def check(self) -> None:
        try:
            named, held = os.stat(self.path), os.fstat(self.fd)
            same = (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)
        except OSError:
            same = False
        if not same:
            raise ClaimLost(f"the journal {self.path} was replaced or removed while rollout of {self.key} ran: this "
                            "process stopped without touching anything more")

    def close(self) -> None:
        with _lock:
            if _bytes.pop((self.fd, self.key), None) is not None:
                _ofd(self.fd, self.key, fcntl.F_UNLCK)


def _lock_file(path: Path, rid: str) -> IO[str] | None:
    """The claim file at ``path``, opened, locked and naming this process; None when another process holds it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 - held for as long as the rollout runs
    except OSError as e:
        raise UsageError(f"cannot open the claim file {path}: {e.strerror or e}") from None

    def lock() -> bool:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    if not _tries(lock):
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(_me(rid)))
    handle.flush()
    return handle


class _LockFile:
    """An flock on the set's claim file. The lock belongs to the open file, not to the name: if the file is
    deleted (or replaced) while held, a second process would open a new file and lock it too. So every check
    compares the name's file with the locked one, and takes the claim again on the new file."""

    def __init__(self, path: Path, handle: IO[str], key: str, rid: str) -> None:
        self.path, self.handle, self.key, self.rid = path, handle, key, rid

    def _same(self) -> bool:
        try:
            named, held = os.stat(self.path), os.fstat(self.handle.fileno())
        except OSError:
            return False
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def check(self) -> None:
        if self._same():
            return
        handle = _lock_file(self.path, self.rid)
        if handle is None:
            raise _lost(self.key, _read(self.path))
        self.handle.close()
        self.handle = handle

    def close(self) -> None:
        self.handle.close()


_sessions: dict[str, object] = {}  # URL -> this process's session holding its claims in that database
_held: set[tuple[str, int]] = set()  # (URL, lock key) this process holds: a session's advisory locks are re-entrant


class _Advisory:
    """One set's advisory lock on the process's claims session; ``close`` lets it go."""

    def __init__(self, url: str, key: int, where: str, set_key: str, rid: str, session: object) -> None:
        self.url, self.key, self.where, self.set_key, self.rid = url, key, where, set_key, rid
        self.session = session  # the session the lock was taken on: a new session holds none of the old's locks

    def check(self) -> None:
        """Still held? The session is asked (one round trip): after a restart of the database it is gone, with its
        locks, and the lock is taken again on a new session unless another process took it meanwhile."""
        import psycopg

        with _lock:
            session = _sessions.get(self.url)
            if session is self.session:
                try:
                    session.execute("SELECT 1")  # type: ignore[attr-defined]
                    return
                except psycopg.Error as e:
                    if not reconnect.is_disconnect(e):
                        raise
                    _forget_session(self.url, session)

            def retake() -> tuple[object, bool]:
                """The lock again on a (new) session, its owner recorded: both wait out a database that drops
                the connection again while it comes back (a restart's recovery)."""
                session = _session(self.url, self.where)
                try:
                    if not _try_lock(session, self.key):
                        return session, False
                    _record(session, self.set_key, self.rid)
                    return session, True
                except psycopg.Error as e:
                    if reconnect.is_disconnect(e):
                        _forget_session(self.url, session)
                    raise
            session, held = reconnect.patiently(retake, f"the claims in the journal at {self.where}")
            if not held:
                _held.discard((self.url, self.key))
                raise _lost(self.set_key, _claimed(session, self.set_key))
            self.session = session

    def close(self) -> None:
        with _lock:
            _held.discard((self.url, self.key))
            session = _sessions.get(self.url)
            if session is self.session and not session.closed:  # type: ignore[attr-defined]
                with contextlib.suppress(Exception):  # a broken session has let go already
                    session.execute("SELECT pg_advisory_unlock(%s)", (self.key,))  # type: ignore[attr-defined]


def _session(url: str, where: str):
    """The process's claims session on ``url`` (a new one if there is none or it broke), waiting out an outage."""
    import psycopg

    def connect():
        session = _sessions.get(url)
        if session is None or session.closed or session.broken:
            session = _sessions[url] = psycopg.connect(url, autocommit=True, connect_timeout=10,
                                                       options="-c search_path=vmssctl")
        return session
    return reconnect.patiently(connect, f"the claims in the journal at {where}")


def _forget_session(url: str, session) -> None:
    if _sessions.get(url) is session:
        del _sessions[url]
    with contextlib.suppress(Exception):
        session.close()


def _try_lock(session, key: int) -> bool:
    return bool(_tries(lambda: session.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]))


def _claimed(session, set_key: str) -> dict:
    row = session.execute("SELECT rollout_id, pid, host FROM claims WHERE scale_set = %s", (set_key,)).fetchone()
    return dict(zip(("rollout", "pid", "host"), row, strict=True)) if row else {}


def _record(session, set_key: str, rid: str) -> None:
    me = _me(rid)
    session.execute("INSERT INTO claims (scale_set, rollout_id, pid, host) VALUES (%s, %s, %s, %s) ON "
                    "CONFLICT (scale_set) DO UPDATE SET rollout_id = excluded.rollout_id, pid = excluded.pid, "
                    "host = excluded.host", (set_key, rid, me["pid"], me["host"]))


def _take_pg(journal: Journal, key: str, rid: str) -> _Advisory:
    """An advisory lock on one session of the process's own, which holds the locks of every set it drives (a
    worker driving a hundred sets holds one connection for them, not a hundred): PostgreSQL drops them all when
    that session ends."""
    import psycopg

    url, lock = journal.url, _pg_key(key)
    assert url is not None
    with _lock:
        def take_it() -> _Advisory:
            session = _session(url, journal.where)
            try:
                if (url, lock) in _held or not _try_lock(session, lock):
                    raise _refuse(_claimed(session, key))
                _held.add((url, lock))
                _record(session, key, rid)
            except psycopg.Error as e:
                if reconnect.is_disconnect(e):
                    _held.discard((url, lock))
                    _forget_session(url, session)
                raise
            return _Advisory(url, lock, journal.where, key, rid, session)
        return reconnect.patiently(take_it, f"the claims in the journal at {journal.where}")


def holder(journal: Journal, key: str) -> str | None:
    """The rollout some live process is driving on ``key`` right now, or None."""
    if journal.url:
        return _holder_pg(journal, key)
    path = _path(journal, key)
    if OFD and journal.path is not None:
        with _lock:
            try:
                fd = _journal_fd(journal.path)
            except UsageError:
                return None
            mine = _bytes.get((fd, key))
            if mine is not None:  # this process holds it (its own locks never conflict with each other)
                return mine
            free = _ofd(fd, key, fcntl.F_RDLCK, probe=True)
        return None if free else (_read(path).get("rollout") or "?")
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
    """A shared advisory lock, taken and let go at once, conflicts with a holder's exclusive one (the two
    statements run on the journal's connection: a new one after a lost connection holds nothing, so nothing
    is left locked)."""
    lock = _pg_key(key)
    if journal._x("SELECT pg_try_advisory_lock_shared(?) AS free", (lock,)).fetchone()["free"]:
        journal._x("SELECT pg_advisory_unlock_shared(?)", (lock,))
        return None
    row = journal._x("SELECT rollout_id FROM claims WHERE scale_set = ?", (key,)).fetchone()
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
