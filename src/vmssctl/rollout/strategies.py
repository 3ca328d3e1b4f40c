"""Strategies: how a phase's instances move to the wanted image. ``decide`` picks one per phase.

A strategy owns its turn: what the turn must observe of the open batch (``judged``, ``watched``, whether
Azure's own upgrade is read), the plan for what is left (``remaining``, which Progress shows), the one next
action once the common checks have passed (abort, rollback, a foreign model change), and what to undo when
the phase stops early (``on_halt``). Its actions are generic effects (``turn.py``) the engine carries out
without knowing the strategy. ``in-place`` upgrades batches where they stand, spending the unavailability
budget; ``surge`` adds new VMs first and retires old ones, never dipping below the capacity; Azure's own
rolling upgrade is watched and gated. Rolling back is in place (or Azure's, on a Rolling set). Soak after a
batch (``--pause``), a pause asked for and maintenance windows are phase state: the next action is a Wait.
"""

from __future__ import annotations

from dataclasses import replace
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
    CancelUpgrade,
    DropAdded,
    Finish,
    Judge,
    Needs,
    Observation,
    Pause,
    Phase,
    Reissue,
    Retire,
    ScaleOut,
    Soaked,
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
    reads_rolling: bool  # does a turn read Azure's own rolling upgrade of the set?

    def remaining(self, obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs) -> Plan:
        """The plan for what is left after the batch in flight."""
        ...

    def next(self, obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs, plan: Plan) -> Action:
        """The one next action of this phase (``plan``: what ``remaining`` says of this turn)."""
        ...

    def judged(self, batch: Batch, instances: tuple[Instance, ...] | list[Instance]) -> list[str] | None:
        """The open batch's instances a turn gets verdicts on (None: none this turn)."""
        ...

    def watched(self, batch: Batch, instances: tuple[Instance, ...] | list[Instance]) -> list[str]:
        """The instances whose operations a wait on the open batch watches."""
        ...

    def on_halt(self) -> list[Action]:
        """What to undo when the phase stops early (abort, rollback, a failure)."""
        ...


class _Common:
    """What most strategies answer alike: the batch's own instances are judged and watched; nothing to undo."""

    reads_rolling = False

    def judged(self, batch: Batch, instances: tuple[Instance, ...] | list[Instance]) -> list[str] | None:
        return list(batch.instance_ids)

    def watched(self, batch: Batch, instances: tuple[Instance, ...] | list[Instance]) -> list[str]:
        return list(batch.instance_ids)

    def on_halt(self) -> list[Action]:
        return []


class InPlace(_Common):
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
            return judge_batch(obs, phase, policy, batch, plan)
        soaking = soak(obs, phase, policy)
        if soaking is not None:
            return soaking
        if obs.requested == "pause":
            return Pause(min(policy.poll, PAUSE_POLL))
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
        # the batch's VMs stop serving now; the first look is a while off (nothing to see the moment it starts)
        return Start(tuple(ids), plan.floor, poll_delay(replace(obs, elapsed=0.0), phase, policy, list(ids)))


class Surge(_Common):
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

    def judged(self, batch: Batch, instances: tuple[Instance, ...] | list[Instance]) -> list[str] | None:
        """The VMs the batch added (none while it retires old ones: their deletes are watched, not judged)."""
        return None if batch.state == "retiring" else surge_judged(batch, instances)

    def watched(self, batch: Batch, instances: tuple[Instance, ...] | list[Instance]) -> list[str]:
        return list(batch.instance_ids) if batch.state == "retiring" else surge_judged(batch, instances)

    def next(self, obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs, plan: Plan) -> Action:
        by_id, batch = obs.by_id, phase.open_batch
        busy = ("updating", "creating", "deleting")
        if batch is None:
            soaking = soak(obs, phase, policy)
            if soaking is not None:
                return soaking
            if obs.requested == "pause":
                return Pause(min(policy.poll, PAUSE_POLL))
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
            return self._scale_out(base + size, {**seen, "surge": size, "base": base}, obs, phase, policy)
        meta = {k: (int(v) if k in ("surge", "base", "watermark") else v) for k, v in batch.meta.items()}
        if batch.state == "retiring":
            present = [i for i in batch.instance_ids if i in by_id]
            again = tuple(i for i in present if by_id[i].provisioning != "deleting")
            if again:
                return Retire(again)  # the delete never landed for these (a crash between intent and call)
            return Wait(policy.poll, "retiring old instances") if present else \
                Judge({}, soak=policy.pause if plan.batches else 0.0)
        new = [by_id[i] for i in surge_judged(batch, obs.instances)]
        if batch.state == "issuing" and len(new) < meta["surge"]:  # the scale-out may not have landed: ask again
            return self._scale_out(meta["base"] + meta["surge"], meta, obs, phase, policy)
        bad = obs.bad
        if bad:
            return DropAdded(tuple(i.instance_id for i in new), bad,
                             f"{len(bad)} new instance(s) of the surge unhealthy: {'; '.join(describe(bad))}")
        if len(new) < meta["surge"] or any(v.state != GOOD for v in obs.verdicts.values()) or \
                len(obs.verdicts) < len(new):
            return Wait(poll_delay(obs, phase, policy, [i.instance_id for i in new], ready_times(phase)),
                        "new instances coming up")
        old = [i.instance_id for i in obs.instances
               if _surge_scope(i, policy, needs) and not _is_new(i, batch) and i.provisioning not in busy]
        return Retire(tuple(retire(list(obs.instances), old, meta["surge"])))

    @staticmethod
    def _scale_out(capacity: int, meta: dict, obs: Observation, phase: Phase, policy: RolloutPolicy) -> ScaleOut:
        """Raise the capacity; the first look comes when earlier batches' new VMs were ready; on a refusal, go on
        in place if ``--surge-fallback in-place`` says so."""
        fallback = replace(policy, strategy="in-place", max_surge=None) if policy.surge_fallback == "in-place" \
            else None
        return ScaleOut(capacity, meta, poll_delay(replace(obs, elapsed=0.0), phase, policy, [], ready_times(phase)),
                        fallback, "surge_refused", "the surge's scale-out", int(meta["surge"]), int(meta["base"]))


class AzureRolling(_Common):
    """A Rolling or Automatic set: Azure's own upgrade moves the instances once the model changed; vmssctl adopts
    each batch Azure starts (the instances it is upgrading or creating), judges it like its own (ARM's view, then
    the gates) and ends the phase on a failure (the engine then cancels Azure's upgrade). Both phases: a rollback
    puts the previous image in the model, which Azure rolls out the same way."""

    name = AZURE_ROLLING
    reads_rolling = True
    BUSY = ("updating", "creating")

    def on_halt(self) -> list[Action]:
        """Stopping early (a failure, an abort, a rollback): cancel Azure's rolling upgrade first (the instances it
        is upgrading finish; no new batch starts)."""
        return [CancelUpgrade("azure_upgrade_cancelled")]

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
            return judge_batch(obs, phase, policy, batch, plan)
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
PAUSE_POLL = 5.0  # longest look between two turns of a paused rollout (a person may resume it any moment)


def for_phase(policy: RolloutPolicy, phase: Phase) -> Strategy:
    """The policy's strategy for this phase: rolling back is in place, except where Azure's upgrade moves the
    instances (a Rolling or Automatic set), which it does both ways."""
    if policy.strategy == AZURE_ROLLING:
        return AZURE
    return SURGE if surging(policy, phase) else IN_PLACE


def of_policy(policy: RolloutPolicy) -> Strategy:
    """The policy's strategy going forward (what a rollout that stops early asks what to undo)."""
    return for_phase(policy, Phase("forward"))


def soak(obs: Observation, phase: Phase, policy: RolloutPolicy) -> Action | None:
    """After a batch that succeeded with work left (``--pause``): wait out the soak, then see which of the
    upgraded instances went unhealthy meanwhile. Phase state, recorded with the batch (``soak``, ``soaked``), so
    a rollout resumed mid-soak waits only what is left. None: no soak is due."""
    last = phase.batches[-1] if phase.batches else None
    if last is None or last.state != "succeeded" or last.finished is None or not last.meta.get("soak") or \
            last.meta.get("soaked"):
        return None
    ends = last.finished + float(last.meta["soak"])
    if obs.now < ends:
        return Wait(ends - obs.now, "soaking")
    upgraded, failed = phase.upgraded, phase.failed
    soured = {i.instance_id for i in obs.instances if i.instance_id in upgraded - failed and not i.healthy}
    if soured and too_many_failed(policy, failed | soured, upgraded):
        return Soaked(tuple(sorted(soured, key=id_key)), failure_reason(policy, failed | soured, describe(
            dict.fromkeys(soured, f"unhealthy after the {float(last.meta['soak']):.0f}s soak"))))
    return Soaked(tuple(sorted(soured, key=id_key)))


def _closed(policy: RolloutPolicy, obs: Observation) -> Wait:
    """Outside every maintenance window: wait until the next one opens (a started batch is never held back; a
    rollback does not wait for a window)."""
    return Wait(max(1.0, windows.next_open(policy.windows, obs.now) - obs.now), "outside the maintenance windows")


def judge_batch(obs: Observation, phase: Phase, policy: RolloutPolicy, batch: Batch, plan: Plan) -> Action:
    """A batch in flight: wait for every verdict (or judge early when its failures already end the phase); a
    judged batch with work left after it soaks for ``--pause``."""
    bad = obs.bad
    waiting = any(v.state not in (GOOD, BAD) for v in obs.verdicts.values())
    judged = phase.upgraded | set(batch.instance_ids)
    fatal = bool(bad) and too_many_failed(policy, phase.failed | set(bad), judged)
    if waiting and not fatal:
        return Wait(poll_delay(obs, phase, policy), "batch in flight")
    if fatal:
        earlier = describe(dict.fromkeys(phase.failed, "failed in an earlier batch"))
        return Judge(bad, failure_reason(policy, phase.failed | set(bad), earlier + describe(bad)))
    return Judge(bad, soak=policy.pause if plan.batches else 0.0)


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

