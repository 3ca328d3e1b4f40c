"""The rollout journal (SQLite): intent, history, and what to roll back to.

The engine never trusts it over what ARM shows; it is what lets a killed rollout be
resumed by id and lets another process pause or abort it. Which process drives a set
right now is not recorded here: see ``claim``.

A SQLite file by default (one machine); a PostgreSQL database (``postgresql://…``, its own ``vmssctl``
schema) when workers on several machines share the rollouts: a set taken over by a worker elsewhere then
finds its rollout where the dead worker left it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import platformdirs

from vmssctl import reconnect, storage
from vmssctl.errors import UsageError

# A rollout's and a batch's states, defined once (the views' words and colours for them: rollout/progress.py)
RolloutState = Literal["running", "paused", "rolling_back", "succeeded", "failed", "aborted", "rolled_back"]
BatchState = Literal["issuing", "issued", "retiring", "succeeded", "failed"]  # retiring: a surge's old VMs go
ACTIVE: tuple[RolloutState, ...] = ("running", "paused", "rolling_back")  # at most one per scale set
MOVING: tuple[RolloutState, ...] = ("running", "rolling_back")  # an engine is driving it
# Columns added after the first release, added to older journals when opened.
ADDED_COLUMNS = (("rollouts", "connection", "TEXT"), ("rollouts", "seen", "REAL"), ("rollouts", "progress", "TEXT"),
                 ("batches", "meta", "TEXT"), ("rollouts", "fleet", "TEXT"))

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY, created REAL, updated REAL, scale_set TEXT, subscription TEXT,
    resource_group TEXT, name TEXT, endpoint TEXT, target TEXT, previous TEXT, policy TEXT,
    state TEXT, phase TEXT, error TEXT, requested TEXT, canary_done INTEGER DEFAULT 0,
    connection TEXT, seen REAL, progress TEXT, fleet TEXT);
CREATE TABLE IF NOT EXISTS batches (
    rollout_id TEXT, seq INTEGER, kind TEXT, instance_ids TEXT, state TEXT, started REAL, finished REAL,
    failed TEXT, meta TEXT, PRIMARY KEY (rollout_id, seq));
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, rollout_id TEXT, time REAL, type TEXT, data TEXT);
CREATE INDEX IF NOT EXISTS events_by_rollout ON events (rollout_id, id);
"""
# PostgreSQL: the same tables in a schema of their own (the database is shared with DBOS), times in double
# precision (its REAL is four bytes, too few for epoch seconds), the claims' holders beside them (see claim.py)
PG_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS vmssctl;
""" + SCHEMA.replace(" REAL", " DOUBLE PRECISION").replace("id INTEGER PRIMARY KEY AUTOINCREMENT",
                                                          "id BIGSERIAL PRIMARY KEY") + """
CREATE TABLE IF NOT EXISTS claims (scale_set TEXT PRIMARY KEY, rollout_id TEXT, pid INTEGER, host TEXT);
"""
# One active rollout per scale set, kept by the database itself: two processes that both passed the checks before
# a start cannot both record one. (Not made on an older journal that already holds two: it still opens.)
ONE_ACTIVE = ("CREATE UNIQUE INDEX IF NOT EXISTS one_active_per_set ON rollouts (scale_set) "
              "WHERE state IN ('running', 'paused', 'rolling_back')")
# made after the columns an older journal lacks were added to it
LATER_INDEXES = ("CREATE INDEX IF NOT EXISTS rollouts_by_fleet ON rollouts (fleet)",)
PG_SCHEMA_LOCK = 7_412_605_310  # an advisory lock serialising the first creation of the schema by several workers
_pg: dict[str, object] = {}  # URL -> the process's connection to that journal database
_pg_lock = threading.Lock()


def data_dir() -> Path:
    return Path(platformdirs.user_data_dir("vmssctl", appauthor=False))


@dataclass
class Rollout:
    id: str
    created: float
    updated: float
    scale_set: str
    subscription: str
    resource_group: str
    name: str
    endpoint: str | None
    target: dict
    previous: dict
    policy: dict
    state: RolloutState
    phase: str
    error: str | None
    requested: str | None
    canary_done: bool
    connection: dict | None = None  # how it connected (emulator dir, or endpoint + subscription): never a secret
    seen: float | None = None  # simulated/real time of the engine's last observation
    progress: dict | None = None  # the engine's last Progress, for every renderer
    fleet: str | None = None  # the fleet run that started (or last resumed) it

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Batch:
    rollout_id: str
    seq: int
    kind: str
    instance_ids: list[str]
    state: BatchState
    started: float | None
    finished: float | None
    failed: list[str]
    meta: dict = field(default_factory=dict)  # surge: watermark (highest id before), surge size, capacity


def scale_set_key(subscription: str, resource_group: str, name: str) -> str:
    return f"{subscription}/{resource_group}/{name}".lower()


def without_password(location: str) -> str:
    """A database URL without its password (libpq finds it again in PGPASSWORD or ~/.pgpass); a path unchanged."""
    from urllib.parse import urlsplit, urlunsplit

    if not location.startswith("postgresql://"):
        return location
    parts = urlsplit(location)
    if parts.password is None:
        return location
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}@{host}" if parts.username else host))



def _pg_connection(url: str):
    """The process's one connection to the journal database at ``url``, made (and the schema with it) on first use
    and again after the last one broke: every journal of the process shares it (psycopg serialises its use), so
    a worker driving a hundred sets holds one connection, not a hundred. Every write is a single statement, so
    none needs a transaction."""
    import psycopg
    from psycopg.rows import dict_row

    with _pg_lock:
        db = _pg.get(url)
        if db is not None and not db.closed and not db.broken:  # type: ignore[attr-defined]
            return db
        db = psycopg.connect(url, autocommit=True, row_factory=dict_row, connect_timeout=10,
                             options="-c search_path=vmssctl")
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (PG_SCHEMA_LOCK,))
            for statement in PG_SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)  # our own constant DDL
            for table, column, kind in ADDED_COLUMNS:  # a journal made by an earlier release
                db.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} "
                           f"{kind.replace('REAL', 'DOUBLE PRECISION')}")
            for index in LATER_INDEXES:
                db.execute(index)
        with contextlib.suppress(psycopg.errors.UniqueViolation), db.transaction():
            db.execute(ONE_ACTIVE)
        _pg[url] = db
        return db


def _pg_drop(url: str, broken) -> None:
    """Forget a connection that broke (the database restarted, the network dropped): the next use makes a new one."""
    with _pg_lock:
        if _pg.get(url) is broken:
            del _pg[url]
    with contextlib.suppress(Exception):
        broken.close()

class _Rows:
    """A statement's rows, read already (a cursor's fetchone/fetchall)."""

    def __init__(self, rows: list) -> None:
        self._rows = rows

    def fetchone(self):
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list:
        return self._rows


class Journal:
    def __init__(self, location: str | Path | None = None, patient: bool = False) -> None:
        """``location``: a SQLite file (default in the user data dir) or a ``postgresql://`` URL. A PostgreSQL journal
        that cannot be reached is waited for: a bounded while for a command (``reconnect.one_shot_wait``), as long
        as it takes when ``patient`` (a worker's step: the database will be back)."""
        location = str(location or os.environ.get("VMSSCTL_JOURNAL") or data_dir() / "journal.sqlite")
        self.url = location if location.startswith("postgresql://") else None
        self.path = None if self.url else Path(location)
        self._sqlite: sqlite3.Connection | None = None
        try:
            if self.url:
                url = self.url
                reconnect.patiently(lambda: _pg_connection(url), f"the journal at {self.where}",
                                    give_up_after=None if patient else reconnect.one_shot_wait())
            else:
                self._sqlite = self._open_sqlite()
        except reconnect.DatabaseUnreachable as e:
            raise UsageError(f"cannot reach the journal at {self.where}: {e}") from None
        except Exception as e:  # OSError, sqlite3.Error, psycopg.Error: the journal cannot be used
            bad = storage.error(e, f"the journal {self.where}", self.path)
            if bad is not None:
                raise bad from None
            raise UsageError(f"cannot open the journal at {self.where}: {str(e).splitlines()[0][:200]}") from None

    @property
    def db(self):
        """The connection: this journal's SQLite file, or the process's current one to the PostgreSQL database."""
        return _pg_connection(self.url) if self.url else self._sqlite

    @property
    def where(self) -> str:
        """The journal's place, for messages (a database URL without its user and password)."""
        return self.url.split("@")[-1] if self.url else str(self.path)

    @property
    def stored_location(self) -> str:
        """``location`` without a password, for what gets written down (a workflow's input)."""
        return without_password(self.location)

    @property
    def location(self) -> str:
        """What opens this journal again, in another process or on another machine (a workflow's input)."""
        return self.url or str(Path(self.path or "").expanduser().resolve())

    def _open_sqlite(self) -> sqlite3.Connection:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        for table, column, kind in ADDED_COLUMNS:
            have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                try:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError as e:  # another process added it first
                    if "duplicate column" not in str(e):
                        raise
        for index in LATER_INDEXES:
            db.execute(index)
        with contextlib.suppress(sqlite3.IntegrityError):
            db.execute(ONE_ACTIVE)
        db.row_factory = sqlite3.Row
        return db

    def _x(self, sql: str, params: tuple = (), again: tuple[str, tuple] | None = None):
        """Run one statement (written with SQLite's ``?`` placeholders) on either database; its cursor.

        On PostgreSQL a lost connection is waited out and the statement run again on a new one: ``again`` is what
        to run on those later tries instead, where running the statement twice could do its work twice (the
        first try may have committed before the connection broke). On SQLite, a file that cannot be written
        (full, read-only, damaged) is one clear line naming it."""
        if not self.url:
            assert self._sqlite is not None
            try:  # read whole: SQLite steps an INSERT … RETURNING as its rows are fetched, so it fails there
                return _Rows(self._sqlite.execute(sql, params).fetchall())
            except sqlite3.Error as e:
                bad = storage.error(e, f"the journal {self.where}", self.path)
                if bad is not None:
                    raise bad from None
                raise
        url, tries = self.url, [0]

        def attempt():
            db = _pg_connection(url)
            text, args = (sql, params) if tries[0] == 0 or again is None else again
            tries[0] += 1
            try:
                return db.execute(text.replace("?", "%s"), args)
            except Exception:
                if db.broken:
                    _pg_drop(url, db)
                raise
        return reconnect.patiently(attempt, f"the journal at {self.where}")

    def close(self) -> None:
        if self._sqlite is not None:  # (the PostgreSQL connection is the process's, shared)
            self._sqlite.close()

    # ------------------------------------------------------------------ rollouts
    def create(self, subscription: str, resource_group: str, name: str, endpoint: str | None, target: dict,
               previous: dict, policy: dict, connection: dict | None = None, fleet: str | None = None) -> Rollout:
        rid = "r-" + uuid.uuid4().hex[:8]
        now = time.time()
        key = scale_set_key(subscription, resource_group, name)
        with self._one_active(key):  # (the id is ours: a try repeated after a lost connection inserts nothing)
            self._x("INSERT INTO rollouts (id, created, updated, scale_set, subscription, resource_group, name, "
                    "endpoint, target, previous, policy, state, phase, error, requested, canary_done, connection, "
                    "fleet) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,0,?,?) ON CONFLICT (id) DO NOTHING", (
                        rid, now, now, key, subscription,
                        resource_group, name, endpoint, json.dumps(target), json.dumps(previous), json.dumps(policy),
                        "running", "model", None, None, json.dumps(connection) if connection else None, fleet))
        return self.get(rid)

    @contextlib.contextmanager
    def _one_active(self, key: str) -> Iterator[None]:
        """A second active rollout of one set, refused by the database's index, as one clear line."""
        try:
            yield
        except Exception as e:
            if "one_active_per_set" not in str(e) and "rollouts.scale_set" not in str(e):
                raise
            other = self.active_for(key)
            raise UsageError(f"rollout {other.id if other else '?'} of this scale set is already active in the journal "
                             f"{self.where}: resume, abort or roll it back first") from None

    def _rollout(self, row) -> Rollout:
        d = dict(row)
        for k in ("target", "previous", "policy"):
            d[k] = json.loads(d[k])
        for k in ("connection", "progress"):
            d[k] = json.loads(d[k]) if d.get(k) else None
        d["canary_done"] = bool(d["canary_done"])
        return Rollout(**d)

    def get(self, rid: str) -> Rollout:
        row = self._x("SELECT * FROM rollouts WHERE id = ?", (rid,)).fetchone()
        if row is None:
            raise UsageError(f"no rollout '{rid}' in the journal {self.where}")
        return self._rollout(row)

    def recent(self, limit: int = 50) -> list[Rollout]:
        rows = self._x("SELECT * FROM rollouts ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
        return [self._rollout(r) for r in rows]

    def of_fleet(self, runs: list[str]) -> list[Rollout]:
        """The rollouts these fleet runs started or resumed, oldest first."""
        if not runs:
            return []
        rows = self._x(f"SELECT * FROM rollouts WHERE fleet IN ({','.join('?' * len(runs))}) ORDER BY created",
                       tuple(runs)).fetchall()
        return [self._rollout(r) for r in rows]

    def last_succeeded(self, key: str) -> Rollout | None:
        """The set's newest rollout that finished well: what its batches took is the next plan's estimate."""
        row = self._x("SELECT * FROM rollouts WHERE scale_set = ? AND state = 'succeeded' ORDER BY created DESC",
                      (key,)).fetchone()
        return self._rollout(row) if row else None

    def active_for(self, key: str) -> Rollout | None:
        row = self._x("SELECT * FROM rollouts WHERE scale_set = ? AND state IN (?,?,?) ORDER BY created DESC",
                      (key, *ACTIVE)).fetchone()
        return self._rollout(row) if row else None

    def update(self, rid: str, **fields: object) -> None:
        fields["updated"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._one_active(self._set_of(rid) if fields.get("state") in ACTIVE else ""):
            self._x(f"UPDATE rollouts SET {cols} WHERE id = ?", (*fields.values(), rid))

    def _set_of(self, rid: str) -> str:
        row = self._x("SELECT scale_set FROM rollouts WHERE id = ?", (rid,)).fetchone()
        return row["scale_set"] if row else ""

    def observed(self, rid: str, seen: float, progress: dict) -> None:
        """The engine's turn: when it last observed ARM and the progress it computed (one write)."""
        self._x("UPDATE rollouts SET seen = ?, progress = ? WHERE id = ?", (seen, json.dumps(progress), rid))

    def unpause(self, r: Rollout) -> None:
        """Back to running (or rolling back, if that is the phase it was paused in), request cleared."""
        self.update(r.id, state="rolling_back" if r.phase == "rollback" else "running", requested=None)

    def request(self, rid: str, what: str | None) -> None:
        """Ask the process running ``rid`` to pause, resume, abort or roll back."""
        self.update(rid, requested=what)

    # ------------------------------------------------------------------ batches
    def add_batch(self, rid: str, kind: str, ids: list[str], started: float, meta: dict | None = None) -> Batch:
        row = (rid, kind, json.dumps(ids), "issuing", started, None, "[]", json.dumps(meta or {}))
        insert = ("INSERT INTO batches (rollout_id, seq, kind, instance_ids, state, started, finished, failed, meta) "
                  "SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ?, ?, ?, ? FROM batches WHERE rollout_id = ?")
        # tried again after a lost connection: the batch the first try may have added, else a new one
        again = ("WITH found AS (SELECT seq FROM batches WHERE rollout_id = ? AND kind = ? AND instance_ids = ? AND "
                 f"started = ?), added AS ({insert} AND NOT EXISTS (SELECT 1 FROM found) RETURNING seq) "
                 "SELECT seq FROM added UNION ALL SELECT seq FROM found",
                 (rid, kind, json.dumps(ids), started, *row, rid))
        seq = self._x(insert + " RETURNING seq", (*row, rid), again).fetchone()["seq"]
        return Batch(rid, seq, kind, ids, "issuing", started, None, [], dict(meta or {}))

    def set_batch(self, batch: Batch, **fields: object) -> None:
        for k, v in fields.items():
            setattr(batch, k, v)
        stored = {k: json.dumps(v) if k in ("failed", "instance_ids", "meta") else v for k, v in fields.items()}
        cols = ", ".join(f"{k} = ?" for k in stored)
        self._x(f"UPDATE batches SET {cols} WHERE rollout_id = ? AND seq = ?",
                (*stored.values(), batch.rollout_id, batch.seq))

    def batches(self, rid: str) -> list[Batch]:
        rows = self._x("SELECT * FROM batches WHERE rollout_id = ? ORDER BY seq", (rid,)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["instance_ids"] = json.loads(d["instance_ids"])
            d["failed"] = json.loads(d["failed"] or "[]")
            d["meta"] = json.loads(d.get("meta") or "{}")
            out.append(Batch(**d))
        return out

    # ------------------------------------------------------------------ events
    def add_event(self, rid: str, t: float, kind: str, data: dict) -> int:
        row = (rid, t, kind, json.dumps(data))
        # tried again after a lost connection: the event the first try may have added, else a new one
        again = ("WITH found AS (SELECT id FROM events WHERE rollout_id = ? AND time = ? AND type = ? AND data = ?), "
                 "added AS (INSERT INTO events (rollout_id, time, type, data) SELECT ?, ?, ?, ? WHERE NOT EXISTS "
                 "(SELECT 1 FROM found) RETURNING id) SELECT id FROM added UNION ALL SELECT id FROM found", row + row)
        found = self._x("INSERT INTO events (rollout_id, time, type, data) VALUES (?,?,?,?) RETURNING id", row,
                        again).fetchone()
        return int(found["id"])

    def events(self, rid: str, after: int = 0) -> list[dict]:
        rows = self._x("SELECT * FROM events WHERE rollout_id = ? AND id > ? ORDER BY id", (rid, after)).fetchall()
        # (the rollout's id too: what its lines name, e.g. "rollout r-… on rg/name")
        return [{"id": r["id"], "rollout": rid, "time": r["time"], "type": r["type"], **json.loads(r["data"])}
                for r in rows]
