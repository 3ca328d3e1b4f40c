"""Where a fleet stands: one FleetView, computed once from the fleet's plan, the events it wrote (its rollback's
too), DBOS's status of its workflow, and its sets' rollout progress from the journal.

Pure, and the only place a fleet's state is decided: ``fleet status`` (table and JSON), ``fleet run``'s live
view, and the dashboard's fleet list and fleet page all render this object, so they never disagree. The
states and their colours are defined here once; the terminal and the page take them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vmssctl.rollout.journal import MOVING

RUNNING = ("PENDING", "ENQUEUED")  # DBOS's statuses of a workflow that has not ended

# a scale set's state in a fleet, in the order counts are shown, and its colour (background, text)
SET_STATES = ("pending", "running", "succeeded", "unchanged", "failed", "aborted", "rolling_back", "rolled_back")
SET_COLOURS = {
    "pending": ("#9ca3af", "#ffffff"), "running": ("#eab308", "#111111"), "succeeded": ("#16a34a", "#ffffff"),
    "unchanged": ("#bbf7d0", "#14532d"), "failed": ("#dc2626", "#ffffff"), "aborted": ("#f97316", "#ffffff"),
    "rolling_back": ("#a855f7", "#ffffff"), "rolled_back": ("#2563eb", "#ffffff")}
SET_HELP = {
    "pending": "not started", "running": "its rollout is running", "succeeded": "upgraded by this fleet",
    "unchanged": "already on the target: nothing to do", "failed": "its rollout failed",
    "aborted": "stopped by an abort", "rolling_back": "being rolled back", "rolled_back": "back on its old image"}
# the fleet's own state, and its colour
FLEET_STATES = ("queued", "running", "paused", "baking", "waiting", "succeeded", "halted", "aborted",
                "rolling back", "rolled back", "failed", "cancelled")
FLEET_COLOURS = {
    "queued": ("#9ca3af", "#ffffff"), "running": ("#eab308", "#111111"), "paused": ("#f97316", "#ffffff"),
    "baking": ("#06b6d4", "#ffffff"), "waiting": ("#7c3aed", "#ffffff"), "succeeded": ("#16a34a", "#ffffff"),
    "halted": ("#dc2626", "#ffffff"), "aborted": ("#f97316", "#ffffff"), "rolling back": ("#a855f7", "#ffffff"),
    "rolled back": ("#2563eb", "#ffffff"), "failed": ("#7f1d1d", "#ffffff"), "cancelled": ("#6b7280", "#ffffff")}
ENDED = ("succeeded", "halted", "aborted", "rolled back", "failed", "cancelled")
LIVE = ("queued", "running", "paused", "baking", "waiting", "rolling back")  # a view that may still change
# a stage's state
STAGE_STATES = ("pending", "waiting", "running", "baking", "done", "skipped", "rejected", "aborted", "halted")


@dataclass
class SetView:
    key: str  # subscription/resource-group/name: a set's identity everywhere
    stage: str
    state: str = "pending"
    rollout: str | None = None
    error: str | None = None
    progress: dict | None = None  # the rollout's own Progress (batch n of m, done/total, healthy/floor)

    @property
    def subscription(self) -> str:
        return self.key.split("/", 2)[0]

    @property
    def resource_group(self) -> str:
        return self.key.split("/", 2)[1]

    @property
    def name(self) -> str:
        return self.key.split("/", 2)[2]

    @property
    def short(self) -> str:
        return f"{self.resource_group}/{self.name}"

    def to_json(self) -> dict:
        return {"set": self.short, "subscription": self.subscription, "resourceGroup": self.resource_group,
                "name": self.name, "stage": self.stage, "state": self.state, "rollout": self.rollout,
                "error": self.error, "progress": _progress_json(self.progress)}


@dataclass
class StageView:
    name: str
    state: str = "pending"
    concurrency: int = 1
    bake: float = 0.0
    approve: bool = False  # a person approves before it starts
    approve_after: bool = False  # ... and after its bake, before the fleet goes on
    approvals: list[dict] = field(default_factory=list)  # {"when", "by", "time"} as they came

    def to_json(self) -> dict:
        return {"stage": self.name, "state": self.state, "concurrency": self.concurrency, "bake": self.bake,
                "approve": self.approve, "approveAfter": self.approve_after, "approvals": self.approvals}


@dataclass
class FleetView:
    fleet: str
    name: str = ""
    state: str = "queued"
    status: str = "PENDING"  # DBOS's status of the fleet's workflow, as it is
    reason: str | None = None  # why it halted, failed, or is waiting
    stages: list[StageView] = field(default_factory=list)
    sets: list[SetView] = field(default_factory=list)
    waiting: dict | None = None  # {"stage", "when", "since"}: the approval the fleet waits for
    baking: dict | None = None  # {"stage", "ends", "left"}: the bake in progress
    started: float | None = None
    now: float | None = None
    rollback_failed: int | None = None  # after a rollback: how many sets it could not put back

    @property
    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(SET_STATES, 0)
        for v in self.sets:
            out[v.state] = out.get(v.state, 0) + 1
        return out

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def subscriptions(self) -> list[str]:
        return sorted({v.subscription for v in self.sets})

    def label(self, v: SetView) -> str:
        """How a set is named to a person: rg/name, with its subscription when the fleet spans several."""
        if len(self.subscriptions) <= 1:
            return v.short
        return f"{short_subscription(v.subscription)}/{v.short}"

    def headline(self) -> str:
        """The fleet's state in a few words: what `fleet status` prints first and the page's title says."""
        if self.state == "waiting" and self.waiting:
            when = "before it starts" if self.waiting.get("when") == "before" else "after its bake"
            return f"waiting for approval of stage '{self.waiting['stage']}' ({when})"
        if self.state == "baking" and self.baking:
            left = self.baking.get("left")
            return f"baking after stage '{self.baking['stage']}'" + (f" ({_duration(left)} left)"
                                                                     if left is not None else "")
        if self.state == "aborted" and self.reason:
            return self.reason  # "aborted by ann@host while stage 'canary' baked"
        if self.state == "rolled back":
            if self.rollback_failed:
                return f"rolled back, but {self.rollback_failed} set(s) could not be"
            return f"rolled back (after: {self.reason})" if self.reason else "rolled back"
        if self.reason and self.state in ("halted", "failed", "cancelled"):
            return f"{self.state}: {self.reason}"
        return self.state

    def to_json(self) -> dict:
        return {"type": "fleet_view", "fleet": self.fleet, "name": self.name, "state": self.state,
                "headline": self.headline(), "workflowStatus": self.status, "reason": self.reason,
                "waiting": self.waiting,
                "baking": self.baking, "counts": self.counts, "stages": [s.to_json() for s in self.stages],
                "sets": [v.to_json() for v in self.sets], "now": self.now}


def short_subscription(sub: str) -> str:
    """A subscription id shortened for a person to tell it from others: its first and last four characters."""
    return f"{sub[:4]}…{sub[-4:]}" if len(sub) > 12 else sub


def set_key(subscription: str, key: str) -> str:
    """A set's full key from an older plan's "rg/name" and its subscription."""
    return key if key.count("/") == 2 else f"{subscription}/{key}"


def stages_of(plan: list[dict]) -> list[tuple[dict, list[str]]]:
    """Each stage of a recorded plan with its sets' full keys (a plan recorded by an earlier release named sets
    "rg/name" with their subscriptions beside)."""
    return [(s, [set_key(s.get("subs", {}).get(k, ""), k) for k in s.get("sets", [])]) for s in plan]


def view(fid: str, plan: list[dict], events: list[dict], status: str, progress: dict[str, dict] | None = None,
         now: float | None = None) -> FleetView:
    """The fleet from its plan, the events it (and its rollback) wrote so far, DBOS's status of its workflow, and
    the running sets' rollout progress by set key; ``now`` on the fleet's clock (for a bake's time left)."""
    stages = stages_of(plan)
    fv = FleetView(fid, status=status, now=now,
                   stages=[StageView(s["stage"], concurrency=int(s.get("concurrency", 1)),
                                     bake=float(s.get("bake", 0.0)), approve=bool(s.get("approve")),
                                     approve_after=bool(s.get("approve_after"))) for s, _ in stages],
                   sets=[SetView(k, s["stage"]) for s, keys in stages for k in keys])
    by_key = {v.key.lower(): v for v in fv.sets}
    by_stage = {s.name: s for s in fv.stages}
    ended: str | None = None  # the fleet's own end, from its events
    paused = False
    for e in events:
        kind = e.get("type")
        stage = by_stage.get(e.get("stage", ""))
        one = by_key.get(str(e.get("key") or e.get("set") or "").lower())
        if kind == "fleet_started":
            fv.name, fv.started = e.get("name", ""), e.get("time")
        elif kind == "approval_waiting" and stage:
            stage.state = "waiting"
            fv.waiting = {"stage": stage.name, "when": e.get("when", "before"), "since": e.get("time")}
        elif kind == "stage_approved" and stage:
            stage.approvals.append({"when": e.get("when"), "by": e.get("by"), "time": e.get("time")})
            stage.state = "pending" if e.get("when") == "before" else "done"
            fv.waiting = None
        elif kind == "stage_rejected" and stage:
            stage.state, fv.waiting = "rejected", None
        elif kind == "stage_started" and stage:
            stage.state = "running"
        elif kind == "stage_skipped" and stage:
            stage.state = "skipped"
        elif kind == "sets_started":
            for k in e.get("keys", []):
                v = by_key.get(str(k).lower())
                if v is not None:
                    v.state = "running"
        elif kind == "set_finished" and one:
            one.state = str(e["state"]) if e.get("state") in SET_STATES else "failed"
            one.rollout, one.error = e.get("rollout") or one.rollout, e.get("error")
        elif kind == "stage_finished" and stage:
            stage.state = "done"
        elif kind == "bake_started" and stage:
            stage.state = "baking"
            fv.baking = {"stage": stage.name, "ends": float(e.get("time", 0.0)) + float(e.get("seconds", 0.0))}
        elif kind in ("bake_finished", "bake_skipped") and stage:
            stage.state, fv.baking = "done", None
        elif kind == "fleet_paused":
            paused = True
        elif kind == "fleet_resumed":
            paused = False
        elif kind == "fleet_halted":
            ended, fv.reason = "halted", e.get("reason")
        elif kind == "fleet_aborted":
            ended, fv.reason = "aborted", "aborted by " + str(e.get("by") or "a person") + (
                f" while stage '{e['stage']}' baked" if e.get("baking") and e.get("stage") else "")
            if fv.baking and fv.baking["stage"] in by_stage:
                by_stage[fv.baking["stage"]].state = "aborted"
        elif kind == "fleet_succeeded":
            ended = "succeeded"
        elif kind == "rollback_started":
            ended = "rolling back"
        elif kind == "rollback_stage_started":
            for k in e.get("sets", []):
                v = by_key.get(str(k).lower())
                if v is not None:
                    v.state = "rolling_back"
        elif kind == "set_rolled_back" and one:
            one.state = "rolled_back" if e.get("state") == "rolled_back" else "failed"
            one.error = e.get("error") if one.state == "failed" else one.error
        elif kind == "fleet_rolled_back":
            ended = "rolled back"
            fv.rollback_failed = int(e.get("failed") or 0)
    if ended in ENDED or ended == "rolling back":
        fv.state = ended
        if ended != "halted" or fv.waiting is None:
            fv.waiting = None
        if ended != "rolling back":
            fv.baking = None
            for s in fv.stages:
                if s.state in ("running", "baking", "waiting"):
                    s.state = {"halted": "halted", "aborted": "aborted"}.get(ended, "done")
            for v in fv.sets:
                if v.state == "running":  # it ended with the fleet, without its own event
                    v.state = "aborted" if ended == "aborted" else "failed"
    elif status in RUNNING:
        if fv.started is None:
            fv.state = "queued"
        elif paused:
            fv.state = "paused"
        elif fv.waiting:
            fv.state = "waiting"
        elif fv.baking:
            fv.state = "baking"
        else:
            fv.state = "running"
    elif status == "CANCELLED":
        fv.state = "cancelled"
    else:  # the workflow ended (ERROR, or beyond its recovery attempts) without saying how: it failed
        fv.state, fv.reason = "failed", fv.reason or f"the fleet's workflow ended {status.lower()}"
    if fv.baking is not None and now is not None:
        fv.baking["left"] = max(0.0, fv.baking["ends"] - now)
    for v in fv.sets:
        p = (progress or {}).get(v.key.lower())
        if p is not None and (v.state in MOVING or v.rollout in (None, p.get("rollout_id"))):
            v.progress = p
            v.rollout = v.rollout or p.get("rollout_id")
    return fv


def _progress_json(p: dict | None) -> dict | None:
    if not p:
        return None
    keys = ("state", "phase", "batch_no", "batches_total", "done", "total", "healthy", "capacity", "floor", "eta")
    return {k: p.get(k) for k in keys}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
