"""Strategies: how a phase's instances move to the wanted image. ``decide`` picks one per phase.

A strategy is two pure functions of one turn: ``remaining`` (the plan for what is left, which Progress
shows) and ``next`` (the one next action once the common checks have passed: abort, rollback, a
foreign model change). ``in-place`` upgrades batches where they stand, spending the unavailability
budget; ``surge`` adds new VMs first and retires old ones, never dipping below the capacity.
Rolling back is always in place.
"""

from __future__ import annotations

from typing import Protocol

from vmssctl.model import Instance, id_key
from vmssctl.plan import Plan, fit_to_floor, make_plan, retire
from vmssctl.policy import AZURE_ROLLING, Amount, RolloutPolicy
from vmssctl.rollout import windows
from vmssctl.rollout.gates import BAD, GOOD
from vmssctl.rollout.journal import Batch
from vmssctl.rollout.turn import (
    MODEL_WAIT,
    Action,
    Adopt,
    DropSurge,
    Finish,
    Judge,
    Needs,
    Observation,
    Pause,
    Phase,
    Reissue,
    Retire,
    ScaleOut,
    Start,
    Wait,
    describe,
    failure_reason,
    poll_delay,
    protected,
    surging,
    too_many_failed,
)


class Strategy(Protocol):
    name: str

    def remaining(self, obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs) -> Plan:
        """The plan for what is left after the batch in flight."""
        ...

    def next(self, obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs, plan: Plan) -> Action:
        """The one next action of this phase (``plan``: what ``remaining`` says of this turn)."""
        ...


class InPlace:
    """Batches upgraded where they stand (manualupgrade, or reimage for a 'latest' refresh), within the floor."""

    name = "in-place"

    def remaining(self, obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs) -> Plan:
        open_batch = phase.open_batch
        in_flight = set(open_batch.instance_ids) if open_batch else set()
        return make_plan(list(obs.instances), policy, lambda i: needs(i) and i.instance_id not in in_flight,
                         canary=0 if (phase.canary_done or phase.kind != "forward") else None)

    def next(self, obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs, plan: Plan) -> Action:
        by_id = obs.by_id
        batch = phase.open_batch
        if batch is not None:
            if batch.state == "issuing":  # did the call land? re-issue only what has visibly not started
                idle = tuple(i for i in batch.instance_ids if i in by_id and needs(by_id[i])
                             and by_id[i].provisioning == "succeeded" and by_id[i].power == "running")
                if idle:
                    return Reissue(idle)
            return judge_batch(obs, phase, policy, batch)
        if obs.requested == "pause":
            return Pause()
        if not plan.batches:
            return Finish("done")
        if obs.model_busy:
            return Wait(MODEL_WAIT, "the model is being updated")
        idle = {iid for iid, i in by_id.items() if i.provisioning in ("succeeded", "failed")}
        ready = [i for i in plan.batches[0] if i in idle]
        if not ready:
            return Wait(policy.poll, "the next instances are busy with another operation")
        if phase.kind == "forward" and not windows.is_open(policy.windows, obs.now):
            return _closed(policy, obs)
        ids = fit_to_floor(ready, by_id, plan.floor)
        if not ids:
            since = phase.floor_wait_since if phase.floor_wait_since is not None else obs.now
            if obs.now - since > policy.health_timeout:
                return Finish(f"only {obs.healthy} healthy instance(s) for {policy.health_timeout:.0f}s; starting "
                              f"the next batch would go below the floor of {plan.floor}")
            return Wait(policy.poll, "the floor", floor_wait_since=since)
        return Start(tuple(ids), plan.floor)


class Surge:
    """Add VMs on the new model, wait until they are good, retire as many old ones; capacity never dips.

    Crash-safe by observation: the batch records the highest instance id before it (the new VMs are above it),
    the surge size and the base capacity; a resumed run sees whether the scale-out landed, which new VMs are
    good, and which retiring VMs are already gone, and never deletes twice.
    """

    name = "surge"

    def remaining(self, obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs) -> Plan:
        """Batches of the surge size over the old VMs (the canary first); the floor is all of them."""
        open_batch = phase.open_batch
        in_flight = set(open_batch.instance_ids) if open_batch else set()
        base = int(open_batch.meta.get("base", 0)) if open_batch else len(obs.instances)
        size = policy.surge_count(base)
        old = [i.instance_id for i in obs.instances if _surge_scope(i, policy, needs)
               and i.instance_id not in in_flight and not _is_new(i, open_batch)]
        canary = _surge_canary(policy, phase) if open_batch is None else 0
        batches = ([old[:canary]] if canary else []) + [old[k:k + size] for k in range(canary, len(old), size)]
        if open_batch is not None and open_batch.state != "retiring":
            batches = batches[1:]  # the batch in flight will retire the first of them
        return Plan(batches, base, 0, base, [])

    def next(self, obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs, plan: Plan) -> Action:
        by_id, batch = obs.by_id, phase.open_batch
        busy = ("updating", "creating", "deleting")
        if batch is None:
            if obs.requested == "pause":
                return Pause()
            old = [i for i in obs.instances if _surge_scope(i, policy, needs)]
            if not old:
                return Finish("done")
            if obs.model_busy:
                return Wait(MODEL_WAIT, "the model is being updated")
            if any(i.provisioning in busy for i in obs.instances):
                return Wait(policy.poll, "instances are busy with another operation")
            if not windows.is_open(policy.windows, obs.now):
                return _closed(policy, obs)
            base = len(obs.instances)
            size = min(_surge_canary(policy, phase) or policy.surge_count(base), len(old))
            ids = [i.instance_id for i in obs.instances]
            # which VMs the scale-out adds: a Uniform set numbers new ones above every id so far; a Flexible set
            # names them at random, so the batch records the names there were before
            seen: dict = {"watermark": max((int(i) for i in ids), default=-1)} if all(i.isdigit() for i in ids) \
                else {"before": sorted(ids, key=id_key)}
            return ScaleOut(base + size, {**seen, "surge": size, "base": base})
        meta = {k: (int(v) if k in ("surge", "base", "watermark") else v) for k, v in batch.meta.items()}
        if batch.state == "retiring":
            present = [i for i in batch.instance_ids if i in by_id]
            again = tuple(i for i in present if by_id[i].provisioning != "deleting")
            if again:
                return Retire(again)  # the delete never landed for these (a crash between intent and call)
            return Wait(policy.poll, "retiring old instances") if present else Judge({})
        new = [by_id[i] for i in surge_judged(batch, obs.instances)]
        if batch.state == "issuing" and len(new) < meta["surge"]:
            return ScaleOut(meta["base"] + meta["surge"], meta)  # the scale-out may not have landed: ask again
        bad = obs.bad
        if bad:
            return DropSurge(tuple(i.instance_id for i in new), bad,
                             f"{len(bad)} new instance(s) of the surge unhealthy: {'; '.join(describe(bad))}")
        if len(new) < meta["surge"] or any(v.state != GOOD for v in obs.verdicts.values()) or \
                len(obs.verdicts) < len(new):
            return Wait(poll_delay(obs, phase, policy, [i.instance_id for i in new], ready_times(phase)),
                        "new instances coming up")
        old = [i.instance_id for i in obs.instances
               if _surge_scope(i, policy, needs) and not _is_new(i, batch) and i.provisioning not in busy]
        return Retire(tuple(retire(list(obs.instances), old, meta["surge"])))


class AzureRolling:
    """A Rolling or Automatic set: Azure's own upgrade moves the instances once the model changed; vmssctl adopts
    each batch Azure starts (the instances it is upgrading or creating), judges it like its own (ARM's view, then
    the gates) and ends the phase on a failure (the engine then cancels Azure's upgrade). Both phases: a rollback
    puts the previous image in the model, which Azure rolls out the same way."""

    name = AZURE_ROLLING
    BUSY = ("updating", "creating")

    def remaining(self, obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs) -> Plan:
        """Azure's batch size over the instances still behind; the floor is the capacity less one batch (all of
        it with maxSurge, recorded as the policy's max_surge when the rollout began)."""
        open_batch = phase.open_batch
        in_flight = set(open_batch.instance_ids) if open_batch else set()
        # the set's own size: recorded with the phase's first batch (with maxSurge the count moves as Azure adds
        # and deletes VMs), else what is not being deleted
        first = phase.batches[0].meta.get("base") if phase.batches else None
        cap = int(first) if first is not None else self._own_size(obs)
        size = (policy.max_surge or policy.max_unavailable or Amount(20, True)).of(max(1, cap)) or 1
        left = [i.instance_id for i in obs.instances if needs(i) and i.instance_id not in in_flight
                and i.provisioning not in ("deleting", *self.BUSY)]
        floor = cap if policy.max_surge else max(0, cap - size)
        return Plan([left[k:k + size] for k in range(0, len(left), size)], cap, size, floor, [])

    @staticmethod
    def _own_size(obs: Observation) -> int:
        """The set's size without the VMs Azure is deleting, or creating to replace others (maxSurge)."""
        return len([i for i in obs.instances if i.provisioning not in ("deleting", "creating")])

    def next(self, obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs, plan: Plan) -> Action:
        batch, rolling = phase.open_batch, obs.rolling
        if batch is not None:
            return judge_batch(obs, phase, policy, batch)
        taken = {i for b in phase.batches for i in b.instance_ids}
        started = tuple(i.instance_id for i in obs.instances if i.instance_id not in taken and (
            i.provisioning in self.BUSY or (not needs(i) and not protected(i, policy) and phase.batches)))
        if started:
            return Adopt(started, self._own_size(obs))
        behind = [i for i in obs.instances if needs(i) and i.provisioning != "deleting"]
        if not behind and not any(i.provisioning == "deleting" for i in obs.instances):
            if rolling is not None and rolling.running:  # its last batch is settling: done when Azure says so
                return Wait(policy.poll, "Azure's rolling upgrade is finishing")
            return Finish("done")
        if rolling is not None and rolling.code in ("Faulted", "Cancelled") and behind and phase.batches:
            return Finish(f"Azure's rolling upgrade {rolling.code.lower()}" + (f": {rolling.error}" if rolling.error
                                                                                else "")
                          + f"; {len(behind)} instance(s) still on the old image")
        since = phase.floor_wait_since if phase.floor_wait_since is not None else obs.now
        if not phase.batches and obs.now - since > policy.health_timeout:
            return Finish(f"Azure started no upgrade of the {len(behind)} instance(s) behind the model within "
                          f"{policy.health_timeout:.0f}s (rolling upgrade: {rolling.code if rolling else 'none'})")
        return Wait(policy.poll, "Azure's upgrade, between batches", floor_wait_since=since)


IN_PLACE, SURGE, AZURE = InPlace(), Surge(), AzureRolling()


def for_phase(policy: RolloutPolicy, phase: Phase) -> Strategy:
    """The policy's strategy for this phase: rolling back is in place, except where Azure's upgrade moves the
    instances (a Rolling or Automatic set), which it does both ways."""
    if policy.strategy == AZURE_ROLLING:
        return AZURE
    return SURGE if surging(policy, phase) else IN_PLACE


def _closed(policy: RolloutPolicy, obs: Observation) -> Wait:
    """Outside every maintenance window: wait until the next one opens (a started batch is never held back; a
    rollback does not wait for a window)."""
    return Wait(max(1.0, windows.next_open(policy.windows, obs.now) - obs.now), "outside the maintenance windows")


def judge_batch(obs: Observation, phase: Phase, policy: RolloutPolicy, batch: Batch) -> Action:
    """A batch in flight: wait for every verdict (or judge early when its failures already end the phase)."""
    bad = obs.bad
    waiting = any(v.state not in (GOOD, BAD) for v in obs.verdicts.values())
    judged = phase.upgraded | set(batch.instance_ids)
    fatal = bool(bad) and too_many_failed(policy, phase.failed | set(bad), judged)
    if waiting and not fatal:
        return Wait(poll_delay(obs, phase, policy), "batch in flight")
    if fatal:
        earlier = describe(dict.fromkeys(phase.failed, "failed in an earlier batch"))
        return Judge(bad, failure_reason(policy, phase.failed | set(bad), earlier + describe(bad)))
    return Judge(bad)


def _surge_scope(inst: Instance, policy: RolloutPolicy, needs: Needs) -> bool:
    """An old VM this surge is to replace: behind, and among ``--instances`` when they are named."""
    return needs(inst) and (not policy.instances or inst.instance_id in policy.instances)


def _surge_canary(policy: RolloutPolicy, phase: Phase) -> int:
    """The first surge batch adds ``--canary`` VMs (and retires as many) before the batches of ``--max-surge``."""
    return policy.canary if policy.canary and not phase.canary_done and phase.kind == "forward" else 0


def _is_new(inst: Instance, batch: Batch | None) -> bool:
    """Was ``inst`` added by this surge batch? (Uniform instance ids only grow; Flexible names are new ones.)"""
    if batch is None:
        return False
    if "before" in batch.meta:
        return inst.instance_id not in batch.meta["before"]
    return "watermark" in batch.meta and inst.instance_id.isdigit() and \
        int(inst.instance_id) > int(batch.meta["watermark"])


def ready_times(phase: Phase) -> list[float]:
    """How long each earlier surge batch's new VMs took to be good (its delete left out): paces the next."""
    return [float(b.meta["ready_after"]) for b in phase.batches if "ready_after" in b.meta]


def surge_judged(batch: Batch, instances: tuple[Instance, ...] | list[Instance]) -> list[str]:
    """The instances a surge batch is judged on: the ones it added."""
    return [i.instance_id for i in instances if _is_new(i, batch)]

