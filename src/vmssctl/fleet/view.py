"""Where a fleet stands, from its events and its plan: one state per stage and per set, for every view.

Pure: the dashboard's fleet page and `fleet status` render what this computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RUNNING = ("PENDING", "ENQUEUED")  # DBOS's statuses of a fleet that has not ended
# a set's state in a fleet, and how the dashboard colours it (the rollout states' colours where they exist)
SET_STATES = ("pending", "running", "succeeded", "unchanged", "failed", "aborted", "rolled_back")


@dataclass
class SetView:
    key: str
    stage: str
    state: str = "pending"
    rollout: str | None = None
    error: str | None = None


@dataclass
class FleetView:
    fleet: str
    name: str = ""
    state: str = "running"  # running, paused, succeeded, halted, aborted, rolled back
    reason: str | None = None
    stages: list[tuple[str, str]] = field(default_factory=list)  # (stage, pending/running/baking/done)
    sets: list[SetView] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in SET_STATES}
        for v in self.sets:
            out[v.state] = out.get(v.state, 0) + 1
        return out


def view(fid: str, plan: list[dict], events: list[dict], status: str) -> FleetView:
    """The fleet from its plan (the stages and their sets) and the events it wrote so far."""
    fv = FleetView(fid, stages=[(s["stage"], "pending") for s in plan],
                   sets=[SetView(k, s["stage"]) for s in plan for k in s["sets"]])
    by_key = {v.key: v for v in fv.sets}
    stage_state = dict(fv.stages)
    for e in events:
        kind, stage = e.get("type"), e.get("stage")
        if kind == "fleet_started":
            fv.name = e.get("name", "")
        elif kind == "stage_started":
            stage_state[stage] = "running"
            for k in e.get("sets", []):
                if k in by_key:
                    by_key[k].state = "running"
        elif kind == "set_finished" and e.get("set") in by_key:
            v = by_key[e["set"]]
            v.state, v.rollout, v.error = e.get("state", "failed"), e.get("rollout"), e.get("error")
            if v.state not in SET_STATES:
                v.state = "failed"
        elif kind == "stage_finished":
            stage_state[stage] = "done"
        elif kind == "bake_started":
            stage_state[stage] = "baking"
        elif kind == "bake_finished":
            stage_state[stage] = "done"
        elif kind == "fleet_halted":
            fv.state, fv.reason = "halted", e.get("reason")
        elif kind == "fleet_aborted":
            fv.state = "aborted"
        elif kind == "fleet_paused":
            fv.state = "paused"
        elif kind == "fleet_resumed":
            fv.state = "running"
        elif kind == "fleet_succeeded":
            fv.state = "succeeded"
        elif kind == "fleet_rolled_back":
            fv.state = "rolled back"
    if status not in RUNNING and fv.state == "running":
        fv.state = status.lower()
    fv.stages = [(name, stage_state[name]) for name, _ in fv.stages]
    return fv
