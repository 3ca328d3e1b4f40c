"""Which process drives a scale set's rollout right now: an exclusive lock the kernel keeps.

One file per scale set beside the journal, locked with ``flock`` by the process running the set's engine
(a terminal's ``vmssctl upgrade``, a fleet's step, a worker). The kernel drops the lock when that process ends,
kill -9 included, so nothing expires, is renewed or has to be reaped: the journal's old lease named a pid,
which a zombie or a reused pid could keep looking alive. ``flock`` locks belong to an open file, so two
threads of one process conflict too. Across machines the scale set's ``vmssctl-rollout`` tag is the claim.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import IO

from vmssctl.errors import UsageError

TRIES = 10  # a probe (``holder``) holds a shared lock for microseconds: taking the claim retries briefly


def _path(directory: Path, key: str) -> Path:
    return directory / "claims" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.lock"


class Claim:
    """Held while this process drives ``key``'s rollout ``rid``; ``release`` (or the process's end) lets go."""

    def __init__(self, handle: IO[str]) -> None:
        self._handle: IO[str] | None = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # the file stays: deleting it would race with the next process opening it
            self._handle = None


def take(directory: Path, key: str, rid: str) -> Claim:
    """Claim the scale set for rollout ``rid``, or refuse with who holds it."""
    path = _path(directory, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 - held for as long as the rollout runs
    except OSError as e:
        raise UsageError(f"cannot open the claim file {path}: {e}") from None
    for attempt in range(TRIES):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt == TRIES - 1:
                handle.close()
                other = _read(path)
                raise UsageError(f"rollout {other.get('rollout', '?')} is being run by process {other.get('pid', '?')} "
                                 f"on {other.get('host', '?')} right now: watch it with 'vmssctl rollout status "
                                 f"{other.get('rollout', '')}', or pause/abort it") from None
            time.sleep(0.02)
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"rollout": rid, "pid": os.getpid(), "host": socket.gethostname()}))
    handle.flush()
    return Claim(handle)


def holder(directory: Path, key: str) -> str | None:
    """The rollout some live process is driving on ``key`` right now, or None."""
    path = _path(directory, key)
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


def running(journal_dir: Path, rollout) -> bool:
    """Is some live process driving ``rollout`` right now? (A set has one active rollout at most, so the holder
    of an active rollout's set is running it, even in the instant before it has written its name.)"""
    h = holder(journal_dir, rollout.scale_set)
    return h is not None and (h == rollout.id or rollout.active)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
