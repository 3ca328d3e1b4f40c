"""Decide: from one observation and what the journal says of this phase, the one next action. Pure: no I/O.

The engine's turn is observe (the only ARM reads: instances, the model when it matters, the gates'
verdicts) → ``decide`` → act (the only writes: ARM calls, journal, events). Like Kubernetes' deployment
controller, each turn does one thing and returns; everything decide needs is in its arguments, so its
every branch is a table test (``tests/test_decide.py``) that runs in microseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from vmssctl.model import ImageRef, Instance, ScaleSet
from vmssctl.plan import Plan, fit_to_floor, make_plan, retire
from vmssctl.policy import RolloutPolicy
from vmssctl.rollout.gates import BAD, GOOD, Verdict
from vmssctl.rollout.journal import Batch
from vmssctl.target import same_image

MODEL_WAIT = 2.0  # re-check a model that is still being updated this often

Needs = Callable[[Instance], bool]  # does this instance still need this phase's work?


@dataclass(frozen=True)
class Phase:
    """This phase (forward or rollback) as the journal and the engine's memory record it."""

    kind: str  # forward | rollback
    batches: tuple[Batch, ...] = ()  # this phase's batches, oldest first
    canary_done: bool = False
    floor_wait_since: float | None = None  # when the floor first held the next batch back
    soured: frozenset[str] = frozenset()  # upgraded instances that went bad while soaking

    @property
    def open_batch(self) -> Batch | None:
        return next((b for b in self.batches if b.state in ("issuing", "issued", "retiring")), None)

    @property
    def failed(self) -> frozenset[str]:
        return frozenset(i for b in self.batches for i in b.failed) | self.soured

    @property
    def upgraded(self) -> frozenset[str]:
        """Instances whose batch has been judged (succeeded or failed)."""
        return frozenset(i for b in self.batches if b.state in ("succeeded", "failed") for i in b.instance_ids)

    @property
    def durations(self) -> list[float]:
        return [b.finished - b.started for b in self.batches
                if b.state == "succeeded" and b.finished is not None and b.started is not None]


@dataclass(frozen=True)
class Observation:
    """What one turn saw (observe is the only place that reads ARM)."""

    now: float
    instances: tuple[Instance, ...]
    requested: str | None = None  # pause | resume | abort | rollback, from the journal
    verdicts: Mapping[str, Verdict] = field(default_factory=dict)  # the open batch: ARM's view, then the gates
    elapsed: float = 0.0  # how long the open batch's VMs have had (time waiting on ARM left out)
    model: ScaleSet | None = None  # read when a batch may start, or when upgraded VMs look off the model
    health_grace: float | None = None  # the health extension's grace period, from the last model read

    @property
    def by_id(self) -> dict[str, Instance]:
        return {i.instance_id: i for i in self.instances}

    @property
    def healthy(self) -> int:
        return sum(1 for i in self.instances if i.healthy)


# ------------------------------------------------------------------------------------ actions
@dataclass(frozen=True)
class Wait:
    seconds: float
    why: str
    floor_wait_since: float | None = None  # set: the floor holds the next batch back since then


@dataclass(frozen=True)
class Start:
    """Start the next batch: one manualupgrade (and reimage for 'latest' refreshes)."""

    ids: tuple[str, ...]
    floor: int


@dataclass(frozen=True)
class Reissue:
    """The batch was being issued when the process stopped: issue again what visibly never started."""

    ids: tuple[str, ...]


@dataclass(frozen=True)
class Judge:
    """The open batch has settled: ``bad`` instances (empty: all good); ``failure`` when that ends the phase."""

    bad: Mapping[str, str]
    failure: str | None = None


@dataclass(frozen=True)
class ScaleOut:
    """Surge: raise the capacity (new VMs come up on the latest model); ``meta`` is recorded with the batch."""

    capacity: int
    meta: Mapping[str, int]


@dataclass(frozen=True)
class Retire:
    """Surge: the new VMs are good: delete as many old ones, chosen to keep the domains balanced."""

    ids: tuple[str, ...]


@dataclass(frozen=True)
class DropSurge:
    """Surge: a new VM failed: delete the VMs this batch added, and end the phase with ``failure``."""

    ids: tuple[str, ...]
    bad: Mapping[str, str]
    failure: str


@dataclass(frozen=True)
class Pause:
    pass


@dataclass(frozen=True)
class Stop:
    """Stop driving this phase because the user asked: ``abort`` or ``rollback``."""

    what: str


@dataclass(frozen=True)
class ModelChanged:
    """Stop without touching anything more: someone else changed the model's image."""

    reason: str


@dataclass(frozen=True)
class Finish:
    """The phase is over: ``done``, or a failure reason."""

    outcome: str


Action = Wait | Start | Reissue | Judge | Pause | Stop | ModelChanged | Finish | ScaleOut | Retire | DropSurge


# ------------------------------------------------------------------------------------ arithmetic
def too_many_failed(policy: RolloutPolicy, failed: frozenset[str] | set[str], upgraded: frozenset[str] | set[str]
                    ) -> bool:
    """More unhealthy upgraded instances than ``--max-unhealthy-upgraded`` (a count, or % of those upgraded)."""
    limit = policy.max_unhealthy_upgraded
    return len(failed) > (limit.of(len(upgraded)) if limit.percent else int(limit.value))


def failure_reason(policy: RolloutPolicy, failed: frozenset[str] | set[str], reasons: list[str]) -> str:
    return (f"{len(failed)} upgraded instance(s) unhealthy, more than --max-unhealthy-upgraded "
            f"{policy.max_unhealthy_upgraded}: {'; '.join(reasons)}")


def protected(inst: Instance, policy: RolloutPolicy) -> bool:
    """Does the instance's protection policy keep this rollout's hands off it? Scale set actions (upgrades)
    never touch a VM protected from them; a surge, which deletes VMs, also spares one protected from scale-in."""
    return inst.protected_from_actions or (policy.strategy == "surge" and inst.protected_from_scale_in)


def surging(policy: RolloutPolicy, phase: Phase) -> bool:
    """Does this phase add VMs before retiring old ones? (Rolling back is always in place.)"""
    return policy.strategy == "surge" and phase.kind == "forward"


def remaining(obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs) -> Plan:
    """The plan for what is left after the batch in flight (whose VMs may already look done while judged)."""
    open_batch = phase.open_batch
    in_flight = set(open_batch.instance_ids) if open_batch else set()
    if surging(policy, phase):  # batches of the surge size over the old VMs; the floor is all of them
        base = int(open_batch.meta.get("base", 0)) if open_batch else len(obs.instances)
        size = policy.surge_count(base)
        old = [i.instance_id for i in obs.instances if _surge_scope(i, policy, needs)
               and i.instance_id not in in_flight and not _is_new(i, open_batch)]
        canary = _surge_canary(policy, phase) if open_batch is None else 0
        batches = ([old[:canary]] if canary else []) + [old[k:k + size] for k in range(canary, len(old), size)]
        if open_batch is not None and open_batch.state != "retiring":
            batches = batches[1:]  # the batch in flight will retire the first of them
        return Plan(batches, base, 0, base, [])
    return make_plan(list(obs.instances), policy, lambda i: needs(i) and i.instance_id not in in_flight,
                     canary=0 if (phase.canary_done or phase.kind != "forward") else None)


def _surge_scope(inst: Instance, policy: RolloutPolicy, needs: Needs) -> bool:
    """An old VM this surge is to replace: behind, and among ``--instances`` when they are named."""
    return needs(inst) and (not policy.instances or inst.instance_id in policy.instances)


def _surge_canary(policy: RolloutPolicy, phase: Phase) -> int:
    """The first surge batch adds ``--canary`` VMs (and retires as many) before the batches of ``--max-surge``."""
    return policy.canary if policy.canary and not phase.canary_done and phase.kind == "forward" else 0


def _is_new(inst: Instance, batch: Batch | None) -> bool:
    """Was ``inst`` added by this surge batch? (Uniform instance ids only grow.)"""
    return batch is not None and "watermark" in batch.meta and int(inst.instance_id) > int(batch.meta["watermark"])


def ready_times(phase: Phase) -> list[float]:
    """How long each earlier surge batch's new VMs took to be good (its delete left out): paces the next."""
    return [float(b.meta["ready_after"]) for b in phase.batches if "ready_after" in b.meta]


def surge_judged(batch: Batch, instances: tuple[Instance, ...] | list[Instance]) -> list[str]:
    """The instances a surge batch is judged on: the ones it added."""
    return [i.instance_id for i in instances if _is_new(i, batch)]


def poll_delay(obs: Observation, phase: Phase, policy: RolloutPolicy, grace: float | None,
               ids: list[str] | None = None, durations: list[float] | None = None) -> float:
    """When to look again at a batch in flight: as late as the answer can come, and no later.

    - Booted VMs in the health extension's grace period cannot be judged before it ends (they report
      ``initializing`` until then), so sleep until the last one's grace period is over.
    - Once a batch has been measured, nothing happens before ~90 % of the fastest one.
    - Before that, back off gently (every ``--poll``, at most a quarter of the time elapsed).
    Never past the health timeout.
    """
    batch = phase.open_batch
    by_id = obs.by_id
    now, elapsed, poll = obs.now, obs.elapsed, policy.poll
    left = max(1.0, policy.health_timeout - elapsed)
    judged = ids if ids is not None else (batch.instance_ids if batch else [])
    waiting = [by_id[i] for i in judged if i in by_id and not by_id[i].healthy]
    if grace is not None and waiting and all(w.health == "initializing" and w.health_since for w in waiting):
        end = max(w.health_since or now for w in waiting) + grace
        return min(left, max(1.0, end - now + 1.0))
    durations = phase.durations if durations is None else durations
    if durations and elapsed < 0.9 * min(durations):
        return min(left, max(poll, 0.9 * min(durations) - elapsed))
    return min(left, max(poll, elapsed / 4))


# ------------------------------------------------------------------------------------ decide
def decide(obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs, wanted: ImageRef) -> Action:
    """The one next action of this phase (``wanted``: the image this phase puts on the instances)."""
    if obs.requested == "abort":
        return Stop("abort")
    if obs.requested == "rollback" and phase.kind == "forward":
        return Stop("rollback")
    by_id = obs.by_id
    if obs.model is not None and not same_image(obs.model.image, wanted):
        return ModelChanged(f"the scale set's image was changed outside this rollout (now {obs.model.image}, this "
                            f"rollout wants {wanted}); stopping with nothing overwritten")
    if surging(policy, phase):
        return _surge(obs, phase, policy, needs)
    batch = phase.open_batch
    if batch is not None:
        if batch.state == "issuing":  # did the call land? re-issue only what has visibly not started
            idle = tuple(i for i in batch.instance_ids if i in by_id and needs(by_id[i])
                         and by_id[i].provisioning == "succeeded" and by_id[i].power == "running")
            if idle:
                return Reissue(idle)
        bad = {i: v.reason or "failed" for i, v in obs.verdicts.items() if v.state == BAD}
        waiting = any(v.state not in (GOOD, BAD) for v in obs.verdicts.values())
        judged = phase.upgraded | set(batch.instance_ids)
        fatal = bool(bad) and too_many_failed(policy, phase.failed | set(bad), judged)
        if waiting and not fatal:  # judged early only when its failures already end the phase
            return Wait(poll_delay(obs, phase, policy, obs.health_grace), "batch in flight")
        if fatal:
            earlier = [f"instance {i}: failed in an earlier batch" for i in sorted(phase.failed, key=int)]
            now_bad = [f"instance {i}: {bad[i]}" for i in sorted(bad, key=int)]
            return Judge(bad, failure_reason(policy, phase.failed | set(bad), earlier + now_bad))
        return Judge(bad)
    if obs.requested == "pause":
        return Pause()
    plan = remaining(obs, phase, policy, needs)
    if not plan.batches:
        return Finish("done")
    if obs.model is not None and obs.model.provisioning_state.lower() in ("updating", "creating"):
        return Wait(MODEL_WAIT, "the model is being updated")
    idle = {iid for iid, i in by_id.items() if i.provisioning in ("succeeded", "failed")}
    ready = [i for i in plan.batches[0] if i in idle]
    if not ready:
        return Wait(policy.poll, "the next instances are busy with another operation")
    ids = fit_to_floor(ready, by_id, plan.floor)
    if not ids:
        since = phase.floor_wait_since if phase.floor_wait_since is not None else obs.now
        if obs.now - since > policy.health_timeout:
            return Finish(f"only {obs.healthy} healthy instance(s) for {policy.health_timeout:.0f}s; starting the "
                          f"next batch would go below the floor of {plan.floor}")
        return Wait(policy.poll, "the floor", floor_wait_since=since)
    return Start(tuple(ids), plan.floor)


def _surge(obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs) -> Action:
    """Surge: add VMs on the new model, wait until they are good, retire as many old ones; capacity never dips.

    Crash-safe by observation: the batch records the highest instance id before it (the new VMs are above it),
    the surge size and the base capacity; a resumed run sees whether the scale-out landed, which new VMs are
    good, and which retiring VMs are already gone, and never deletes twice.
    """
    by_id, batch = obs.by_id, phase.open_batch
    busy = ("updating", "creating", "deleting")
    if batch is None:
        if obs.requested == "pause":
            return Pause()
        old = [i for i in obs.instances if _surge_scope(i, policy, needs)]
        if not old:
            return Finish("done")
        if obs.model is not None and obs.model.provisioning_state.lower() in ("updating", "creating"):
            return Wait(MODEL_WAIT, "the model is being updated")
        if any(i.provisioning in busy for i in obs.instances):
            return Wait(policy.poll, "instances are busy with another operation")
        base = len(obs.instances)
        size = min(_surge_canary(policy, phase) or policy.surge_count(base), len(old))
        watermark = max((int(i.instance_id) for i in obs.instances), default=-1)
        return ScaleOut(base + size, {"watermark": watermark, "surge": size, "base": base})
    meta = {k: int(v) for k, v in batch.meta.items()}
    if batch.state == "retiring":
        present = [i for i in batch.instance_ids if i in by_id]
        again = tuple(i for i in present if by_id[i].provisioning != "deleting")
        if again:
            return Retire(again)  # the delete never landed for these (a crash between intent and call)
        return Wait(policy.poll, "retiring old instances") if present else Judge({})
    new = [by_id[i] for i in surge_judged(batch, obs.instances)]
    if batch.state == "issuing" and len(new) < meta["surge"]:
        return ScaleOut(meta["base"] + meta["surge"], meta)  # the scale-out may not have landed: ask again
    bad = {i: v.reason or "failed" for i, v in obs.verdicts.items() if v.state == BAD}
    if bad:
        reasons = [f"instance {i}: {bad[i]}" for i in sorted(bad, key=int)]
        return DropSurge(tuple(i.instance_id for i in new), bad,
                         f"{len(bad)} new instance(s) of the surge unhealthy: {'; '.join(reasons)}")
    if len(new) < meta["surge"] or any(v.state != GOOD for v in obs.verdicts.values()) or \
            len(obs.verdicts) < len(new):
        return Wait(poll_delay(obs, phase, policy, obs.health_grace, [i.instance_id for i in new], ready_times(phase)),
                    "new instances coming up")
    old = [i.instance_id for i in obs.instances
           if _surge_scope(i, policy, needs) and not _is_new(i, batch) and i.provisioning not in busy]
    return Retire(tuple(retire(list(obs.instances), old, meta["surge"])))
