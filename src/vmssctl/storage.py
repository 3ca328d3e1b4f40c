"""What a failing disk or database file means, in one line that names the file and says what to do.

A journal or a DBOS database on a disk that filled up, went read-only, lost its directory, or holds a
damaged page fails deep inside sqlite3 or SQLAlchemy with a message about the database engine. The user
needs the file and the fix; these errors are translated where the file is known (``Journal``, ``durable``).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from vmssctl.errors import VmssctlError

FULL_BELOW = 256 * 1024  # bytes free under which a write that failed is taken to have found the disk full


class StorageError(VmssctlError):
    """A local database file vmssctl cannot use. Exit 2: the failed write did not happen, and nothing in Azure was
    changed by it (a rollout interrupted by one is resumable once the file is usable again)."""

    exit_code = 2


def problem(e: BaseException) -> str | None:
    """What is wrong with the file behind ``e`` and what to do, or None when ``e`` is not a storage failure."""
    orig = getattr(e, "orig", None) or e  # SQLAlchemy wraps the driver's exception
    text = str(orig).lower()
    code = getattr(orig, "errno", None)
    if isinstance(orig, OSError) and code is not None:
        if code == errno.ENOSPC or code == errno.EDQUOT:
            return "the disk is full: free some space and run the command again"
        if code == errno.EROFS:
            return "the disk holding it is read-only: remount it read-write, or use a file elsewhere"
        if code in (errno.EACCES, errno.EPERM):
            return "permission denied: make the file and its directory writable, or use a file elsewhere"
        if code == errno.ENOENT:
            return "its directory does not exist: create it, or use a file elsewhere"
        return None
    if not isinstance(orig, sqlite3.Error):
        return None
    if "disk is full" in text or "database or disk is full" in text:
        return "the disk is full: free some space and run the command again"
    if "readonly" in text or "read-only" in text:
        return "it is read-only: make the file and its directory writable (or the disk), or use a file elsewhere"
    if "malformed" in text or "not a database" in text or "file is encrypted" in text:
        return ("it is damaged (" + str(orig)[:80] + "): move it aside (mv FILE FILE.damaged) and run again; "
                "'sqlite3 FILE .recover' may save what it held")
    if "unable to open" in text:
        return "it cannot be opened: check that its directory exists and is writable"
    if "disk i/o error" in text:
        return "the disk failed to read or write it (I/O error): check the disk"
    return None


def error(e: BaseException, what: str, path: str | os.PathLike | None = None) -> StorageError | None:
    """``e`` as a StorageError naming ``what`` (e.g. "the journal /path/journal.sqlite"), or None. With the file's
    ``path``, a file SQLite could not open is looked at: a missing directory or a read-only disk is said so."""
    why = problem(e)
    if why is not None and path is not None and why.startswith(("it cannot be opened", "the disk failed")):
        why = _why_not_open(Path(path)) or why
    return StorageError(f"{what}: {why}") if why else None


def _why_not_open(path: Path) -> str | None:
    folder = path.parent
    if not folder.is_dir():
        return "its directory does not exist: create it, or use a file elsewhere"
    try:
        disk = os.statvfs(folder)
    except OSError:
        return None
    if disk.f_flag & os.ST_RDONLY:
        return "the disk holding it is read-only: remount it read-write, or use a file elsewhere"
    if disk.f_bavail * disk.f_frsize < FULL_BELOW:  # SQLite may say "I/O error" where the disk filled up
        return "the disk is full: free some space and run the command again"
    if not os.access(folder, os.W_OK):
        return "its directory is not writable: make it writable, or use a file elsewhere"
    return None
