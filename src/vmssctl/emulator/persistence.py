"""Where the emulator's state is kept between runs, behind one interface: a store loads the last state and
saves a new one durably (on disk before the client that caused it hears back). Today one JSON file replaced
atomically; a store that writes only what changed fits the same two calls."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol


class StateError(Exception):
    """The state directory holds something this emulator must not start from."""


class Store(Protocol):
    def load(self, schema: int) -> dict | None:
        """The last state saved (None: none yet); StateError when it cannot be used."""
        ...

    def save(self, state: Callable[[], dict]) -> None:
        """Make ``state()`` durable; OSError, ValueError or TypeError when that failed (after which a restart must
        never take an older state for the current one)."""
        ...


class JsonFileStore:
    """``state.json`` in the state directory, replaced atomically (temp file, fsync, rename, fsync the
    directory). After a failed save the previous file becomes ``state.stale.json``: a restart refuses it
    until a person says which state to start from."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.file = state_dir / "state.json"
        self.stale = state_dir / "state.stale.json"

    def load(self, schema: int) -> dict | None:
        if self.stale.exists() and not self.file.exists():
            raise StateError(f"the emulator's last save in {self.dir} failed, so {self.stale.name} is older than "
                             "the state it served: rename it to state.json to start from it anyway, or delete it "
                             "to start afresh")
        if not self.file.exists():
            return None
        try:
            state = json.loads(self.file.read_text())
            if not isinstance(state, dict) or state.get("schema") != schema:
                found = state.get("schema") if isinstance(state, dict) else None
                raise ValueError(f"schema {found!r}, this emulator writes {schema}")
        except (OSError, ValueError) as e:
            raise StateError(f"cannot read the emulator state {self.file}: {e}") from None
        return state

    def save(self, state: Callable[[], dict]) -> None:
        tmp = self.file.with_suffix(".tmp")
        try:
            data = json.dumps(state(), separators=(",", ":"), allow_nan=False).encode()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.file)
            dir_fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except (OSError, ValueError, TypeError):
            if self.file.exists():
                with contextlib.suppress(OSError):
                    os.replace(self.file, self.stale)
            raise
