"""Where the emulator's state is kept between runs: a store loads the last state and saves changes durably (on
disk before the client that caused it hears back).

``SqliteStore`` keeps a row per part of the world (a scale set, each of its VMs, an operation, a load balancer,
...) in SQLite (WAL, synchronous FULL) and writes, in one transaction, only the rows whose bytes changed: a save
costs what changed, not the whole state (the JSON file it replaces was rewritten whole on every acknowledged
write: 66 ms at 4.3 MB). ``JsonFileStore`` is still read, once, to carry an older state directory over."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Protocol

import orjson


class StateError(Exception):
    """The state directory holds something this emulator must not start from."""


class Store(Protocol):
    def load(self, schema: int) -> dict | None:
        """The last state saved (None: none yet); StateError when it cannot be used."""
        ...

    def save(self, rows: dict[str, bytes | None]) -> None:
        """Make these rows durable (None: delete it) in one transaction; OSError or ValueError when that failed
        (after which a restart must never take an older state for the current one)."""
        ...


def refuse_stale(where: Path, current: Path, stale: Path) -> None:
    """A failed save left ``stale`` (older than what was served) and no current state: a person says which."""
    if stale.exists() and not current.exists():
        raise StateError(f"the emulator's last save in {where} failed, so {stale.name} is older than the state it "
                         f"served: rename it to {current.name} to start from it anyway, or delete it to start afresh")


class JsonFileStore:
    """``state.json``: how state directories were kept before ``SqliteStore`` (read once to carry one over; a
    ``state.stale.json`` left by a failed save is refused as before)."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.file = state_dir / "state.json"
        self.stale = state_dir / "state.stale.json"

    def load(self, schema: int) -> dict | None:
        refuse_stale(self.dir, self.file, self.stale)
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


class SqliteStore:
    """``state.db`` in the state directory: a row per part. After a failed save the database becomes
    ``state.stale.db``: a restart refuses it until a person says which state to start from. An older
    ``state.json`` is read when there is no database yet (and removed once its state is saved here)."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.file = state_dir / "state.db"
        self.stale = state_dir / "state.stale.db"
        self.legacy = JsonFileStore(state_dir)
        self._db: sqlite3.Connection | None = None
        self.fail_next = False  # an injected failure (``/_emulator/persistence``), for its tests

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.file, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a committed save survives power loss, not only a crash
            db.execute("CREATE TABLE IF NOT EXISTS parts (key TEXT PRIMARY KEY, data BLOB NOT NULL)")
            with contextlib.suppress(OSError):
                os.chmod(self.file, 0o600)
            self._db = db
        return self._db

    def load(self, schema: int) -> dict | None:
        refuse_stale(self.dir, self.file, self.stale)
        if not self.file.exists():
            return self.legacy.load(schema)
        try:
            rows = self._open().execute("SELECT key, data FROM parts").fetchall()
            if not rows:
                return None
            parts = {k: orjson.loads(v) for k, v in rows}
            found = parts.get("meta", {}).get("schema")
            if found != schema:
                raise ValueError(f"schema {found!r}, this emulator writes {schema}")
            from vmssctl.emulator.world import World

            state = World.from_parts(parts)
        except (sqlite3.Error, OSError, ValueError, KeyError, TypeError) as e:
            raise StateError(f"cannot read the emulator state {self.file}: {e}") from None
        self.loaded = {k: bytes(v) for k, v in rows}
        return state

    loaded: dict[str, bytes] = {}  # the rows as the last load read them (what is saved already)

    def save(self, rows: dict[str, bytes | None]) -> None:
        try:
            if self.fail_next:
                raise OSError("injected: the emulator was asked to fail its next save")
            db = self._open()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR REPLACE INTO parts (key, data) VALUES (?, ?)",
                               [(k, v) for k, v in rows.items() if v is not None])
                db.executemany("DELETE FROM parts WHERE key = ?", [(k,) for k, v in rows.items() if v is None])
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as e:
            self._set_aside()
            raise OSError(str(e)) from None
        if self.legacy.file.exists():  # carried over: the database is the state now
            with contextlib.suppress(OSError):
                self.legacy.file.unlink()

    def _set_aside(self) -> None:
        """A failed save: the database (older than what was served) becomes state.stale.db."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.file}{suffix}")
            if src.exists():
                with contextlib.suppress(OSError):
                    os.replace(src, Path(f"{self.stale}{suffix}"))

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None


def encode(value: object) -> bytes:
    """A part's row: its JSON (orjson; the same bytes for the same value, so unchanged rows are not written)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


class Saved:
    """What the store holds, row by row, and which rows a save must write: the world's candidate parts whose
    bytes changed, and the rows of what is gone (a set deleted, a VM removed, an operation pruned, a load
    balancer deleted). Kept indexed, so that a save costs what may have changed, not every row."""

    def __init__(self, rows: dict[str, bytes]) -> None:
        self.rows = rows
        self.vms: dict[str, dict[str, int]] = {}  # a set's key -> its VMs' row keys -> their instance ids
        self.records: dict[str, set[str]] = {}  # a set's key -> its availability record's row keys
        self.sets: set[str] = set()  # the sets' keys ("rg/name")
        self.by_group: dict[str, set[str]] = {}  # a resource group -> its sets' keys
        self.ops: set[str] = set()  # operation ids
        self.others: set[str] = set()  # load balancers', gateways' and loads' row keys
        self.groups: set[str] = set()  # resource groups' row keys
        # (a store saved when the meta row held every resource group: the next save writes the groups' own rows)
        self.whole_next = "meta" in rows and "groups" in orjson.loads(rows["meta"])
        for k, v in rows.items():
            self._index(k, v)

    def _index(self, key: str, data: bytes | None) -> None:
        kind, _, rest = key.partition(":")
        if kind == "inst":
            set_key, _, iid = rest.rpartition(":")
            vms = self.vms.setdefault(set_key, {})
            if data is not None:
                vms[key] = int(iid)
            else:
                vms.pop(key, None)
        elif kind == "avl":
            owner = self.records.setdefault(rest.rsplit(":", 1)[0], set())
            owner.add(key) if data is not None else owner.discard(key)
        elif kind == "set" and data is not None:
            self.sets.add(rest)
            self.by_group.setdefault(rest.split("/", 1)[0], set()).add(rest)
        elif kind == "set":
            self.sets.discard(rest)
            self.by_group.get(rest.split("/", 1)[0], set()).discard(rest)
            self.vms.pop(rest, None)
            self.records.pop(rest, None)
        elif kind == "op" and data is not None:
            self.ops.add(rest)
        elif kind == "op":
            self.ops.discard(rest)
        elif kind in ("lb", "gw", "load"):
            self.others.add(key) if data is not None else self.others.discard(key)
        elif kind == "grp":
            self.groups.add(key) if data is not None else self.groups.discard(key)

    def changes(self, world: Any, full: bool = False) -> dict[str, bytes | None]:
        """The rows to write (None: to delete) for the world as it is now."""
        if full or self.whole_next:
            world.touch(None)
        parts, looked, groups, partial, ops = world.parts()  # (after touch(None): every part, as all_parts)
        out: dict[str, bytes | None] = {}
        rows = self.rows
        for k, v in parts.items():
            data = encode(v)
            if rows.get(k) != data:
                out[k] = data
        candidates = set(self.sets) if looked is None else \
            {f"{rg}/{name}" for rg, name in looked}.union(*(self.by_group.get(g, ()) for g in groups))
        for set_key in candidates:
            out.update(self._gone(world, set_key))
        for sk, ids in partial.items():  # (a set looked at in part: a VM of these gone, or the set gone)
            out.update(self._gone(world, "/".join(sk), ids))
        gone_ops = self.ops - world.ops.keys() if ops is None else {o for o in ops if o not in world.ops} & self.ops
        out.update({f"op:{op_id}": None for op_id in gone_ops})
        out.update({k: None for k in self.others - parts.keys()})
        gone = self.groups if looked is None else {f"grp:{g}" for g in groups}.intersection(self.groups)
        out.update({k: None for k in gone - parts.keys()})
        return out

    def _gone(self, world: Any, set_key: str, ids: set[int] | None = None) -> dict[str, None]:
        """A set's saved rows it no longer has, as the world says (a VM unchanged since it was saved is not among
        a save's parts): its own row when the set is gone; its VMs' rows (``ids``: of these VMs, unless the set is
        gone) whose VMs are gone; its availability rows dropped past the record's cap, or the set gone or made
        again (the rows it has are written when they change)."""
        out: dict[str, None] = {}
        ss = world.saved_set(set_key)
        if ss is None and set_key in self.sets:
            out[f"set:{set_key}"] = None
        saved, live = self.vms.get(set_key, {}), ss.instances if ss is not None else {}
        if ids is None or ss is None:
            out.update({vm: None for vm, iid in saved.items() if iid not in live})
        else:
            out.update({vm: None for i in ids if (vm := f"inst:{set_key}:{i}") in saved and i not in live})
        records = self.records.get(set_key)
        if records:
            rows = world.record_rows(set_key)
            out.update({k: None for k in records if int(k.rsplit(":", 1)[1]) not in rows})
        return out

    def done(self, rows: dict[str, bytes | None]) -> None:
        """The store committed ``rows``."""
        self.whole_next = self.whole_next and "meta" not in rows
        for k, v in rows.items():
            if v is None:
                self.rows.pop(k, None)
            else:
                self.rows[k] = v
            self._index(k, v)
