"""What a rollout reports, and the sinks that show it (JSON lines, plain log, live view).

The engine emits events and progress snapshots; renderers only consume them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import IO, Protocol

from vmssctl.model import Instance


@dataclass
class Snapshot:
    """The rollout as last observed, for live views."""

    rollout_id: str
    scale_set: str
    phase: str  # forward | rollback
    target: str
    instances: list[Instance]
    batch: list[str]
    batch_no: int
    batches_total: int
    done: int
    total: int
    floor: int
    started: float
    now: float
    eta: float | None
    paused: bool = False
    fault_domains: int = 5
    recent: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> int:
        return sum(1 for i in self.instances if i.healthy)


class Sink(Protocol):
    def event(self, event: dict) -> None: ...
    def snapshot(self, snap: Snapshot) -> None: ...
    def close(self) -> None: ...


class JsonLines:
    """``-o json``: one JSON object per line, events and progress, flushed as they happen."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout

    def event(self, event: dict) -> None:
        self.stream.write(json.dumps(event, default=str) + "\n")
        self.stream.flush()

    def snapshot(self, snap: Snapshot) -> None:
        self.event({"type": "progress", "rollout": snap.rollout_id, "time": snap.now, "phase": snap.phase,
                    "done": snap.done, "total": snap.total, "batch": snap.batch, "healthy": snap.healthy,
                    "capacity": len(snap.instances), "floor": snap.floor, "eta": snap.eta})

    def close(self) -> None:
        pass


def _ids(ids: list[str], shown: int = 12) -> str:
    return ", ".join(ids[:shown]) + (f" (+{len(ids) - shown} more)" if len(ids) > shown else "")


def describe(event: dict) -> str:
    """One human line per event."""
    t = event["type"]
    d = event
    texts = {
        "rollout_started": lambda: f"rollout {d['rollout']} on {d['scaleSet']}: {d['from']} -> {d['to']}",
        "rollout_resumed": lambda: f"resuming rollout {d['rollout']} ({d['phase']})",
        "model_updated": lambda: f"model updated: {', '.join(f'{k} {a} -> {b}' for k, a, b in d['diff'])}",
        "model_unchanged": lambda: "model already on the target image; upgrading instances still behind",
        "batch_started": lambda: f"batch {d['batch']} ({d['phase']}): instances {_ids(d['instances'])}",
        "batch_reissued": lambda: f"batch {d['batch']}: re-issuing {_ids(d['instances'])} (upgrade never started)",
        "batch_succeeded": lambda: f"batch {d['batch']} healthy after {d['seconds']:.0f}s",
        "batch_failed": lambda: f"batch {d['batch']} FAILED: " + "; ".join(d["reasons"]),
        "waiting_for_floor": lambda: f"waiting: {d['healthy']} healthy, floor {d['floor']}",
        "soak": lambda: f"soaking {d['seconds']:.0f}s",
        "paused": lambda: "paused (vmssctl rollout resume to continue)",
        "resumed": lambda: "resumed",
        "rollback_started": lambda: f"rolling back to {d['to']}",
        "rollout_succeeded": lambda: f"done: {d['upgraded']} instance(s) upgraded in {d['seconds']:.0f}s",
        "rollout_failed": lambda: f"FAILED: {d['error']}",
        "rollout_rolled_back": lambda: f"rolled back: {d['error']}",
        "rollout_aborted": lambda: "aborted",
        "conflict": lambda: f"ARM refused ({d['code']}): {d['message']}; retrying",
    }
    fn = texts.get(t)
    return fn() if fn else f"{t} " + json.dumps({k: v for k, v in d.items() if k not in ("type", "time")})


class PlainLog:
    """No terminal: one line per event on stderr-like output."""

    def __init__(self, console) -> None:
        self.console = console

    def event(self, event: dict) -> None:
        if event["type"] != "progress":
            self.console.print(describe(event), highlight=False)

    def snapshot(self, snap: Snapshot) -> None:
        pass

    def close(self) -> None:
        pass
