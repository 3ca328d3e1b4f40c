"""What a rollout reports, and the sinks that show it (JSON lines, plain log, live view).

The engine emits events and progress snapshots; renderers only consume them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import IO, Protocol

from vmssctl.model import Instance
from vmssctl.rollout.progress import Progress


@dataclass
class Snapshot:
    """One engine turn for the views: the Progress (the numbers) and the instances behind the heatmap."""

    progress: Progress
    instances: list[Instance]
    fault_domains: int = 5
    recent: list[str] = field(default_factory=list)


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
        p = snap.progress.to_json()
        p.pop("history")
        self.event({"type": "progress", "rollout": p.pop("rollout_id"), "time": p["now"], **p})

    def close(self) -> None:
        pass


def _ids(ids: list[str], shown: int = 12) -> str:
    return ", ".join(ids[:shown]) + (f" (+{len(ids) - shown} more)" if len(ids) > shown else "")


def _secs(seconds: object, event: dict) -> str:
    """Seconds as shown in an event line, marked when they are the emulator's simulated seconds."""
    value = float(seconds) if isinstance(seconds, int | float) else 0.0
    return f"{value:.0f}s" + (" (simulated)" if event.get("simulated") else "")


def describe(event: dict) -> str:
    """One human line per event."""
    t = event["type"]
    d = event
    texts = {
        "rollout_started": lambda: f"rollout {d.get('rollout', '')} on {d['scaleSet']}: {d['from']} -> {d['to']}",
        "rollout_resumed": lambda: f"resuming rollout {d.get('rollout', '')} ({d['phase']}); "
                                   f"{_secs(d.get('interrupted'), d)} without a running vmssctl left out of its times",
        "model_updated": lambda: f"model updated: {', '.join(f'{k} {a} -> {b}' for k, a, b in d['diff'])}",
        "model_unchanged": lambda: "model already on the target image; upgrading instances still behind",
        "batch_started": lambda: (f"batch {d['batch']} ({d['phase']}): adding {d['adding']} new instance(s) on the "
                                  "new image" if "adding" in d else
                                  f"batch {d['batch']} ({d['phase']}): instances {_ids(d['instances'])}"),
        "surge_refused": lambda: f"ARM refused the scale-out ({d['reason']})" + (
            "; going on in place" if d.get("fallback") else ""),
        "retiring": lambda: f"batch {d['batch']}: new instances good; deleting old {_ids(d['instances'])}",
        "batch_reissued": lambda: f"batch {d['batch']}: re-issuing {_ids(d['instances'])} (upgrade never started)",
        "batch_succeeded": lambda: f"batch {d['batch']} healthy after {_secs(d['seconds'], d)}",
        "batch_failed": lambda: f"batch {d['batch']} FAILED: " + "; ".join(d["reasons"]),
        "waiting_for_floor": lambda: f"waiting: {d['healthy']} healthy, floor {d['floor']}",
        "waiting": lambda: f"waiting {_secs(d['seconds'], d)}: {d['why']}",
        "soak": lambda: f"soaking {_secs(d['seconds'], d)}",
        "paused": lambda: "paused (vmssctl rollout resume to continue)",
        "resumed": lambda: "resumed",
        "rollback_started": lambda: f"rolling back to {d['to']}",
        "rollout_succeeded": lambda: f"done: {d['upgraded']} instance(s) upgraded in {_secs(d['seconds'], d)}",
        "rollout_failed": lambda: f"FAILED: {d['error']}",
        "rollout_rolled_back": lambda: f"rolled back: {d['error']}",
        "rollout_aborted": lambda: "aborted",
        "conflict": lambda: f"ARM refused ({d['code']}): {d['message']}; retrying",
        "drained": lambda: f"drained {_ids(d['instances'])}: out of the load balancers (admin state Down)",
        "readmitted": lambda: f"readmitted {_ids(d['instances'])} into the load balancers",
        "readmit_refused": lambda: f"LEFT DRAINED: {d['reason']}",
        "measured": lambda: (f"batch {d['batch']}: {d['requests']:,} requests, {d['failed']:,} failed "
                             f"({d['ratio']:.3%}) in {_secs(d['seconds'], d)}") if d.get("gate") == "requests"
        else f"batch {d['batch']}: {d['measured']}" if "measured" in d
        else f"batch {d['batch']}: " + ", ".join(f"{k} {v}" for k, v in d.items()
                                                 if k not in ("type", "time", "batch", "phase", "rollout")),
        "green_creating": lambda: f"creating the green scale set {d['name']} ({d['capacity']} VMs, {d['image']})",
        "blue_scaled_down": lambda: f"green {d['green']} serves: blue scaled to 0",
        "green_deleted": lambda: f"green {d['name']} deleted: {d['reason']}",
    }
    fn = texts.get(t)
    try:
        if fn:
            return fn()
    except (KeyError, TypeError, ValueError):  # an event from an older or newer vmssctl: show it as it is
        pass
    return f"{t} " + json.dumps({k: v for k, v in d.items() if k not in ("type", "time")}, default=str)


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
