"""Surge: add VMs on the new model, wait until they are good, retire as many old ones; capacity never dips."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from vmssctl.model import Instance, id_key
from vmssctl.plan import Plan, retire
from vmssctl.policy import RolloutPolicy
from vmssctl.rollout import windows
from vmssctl.rollout.gates import GOOD
from vmssctl.rollout.journal import Batch
from vmssctl.rollout.strategies import drain
from vmssctl.rollout.strategies.base import PAUSE_POLL, Common, closed, soak
from vmssctl.rollout.turn import (
    MODEL_WAIT,
    Action,
    DropAdded,
    Finish,
    Judge,
    Needs,
    Observation,
    Pause,
    Phase,
    Retire,
    ScaleOut,
    Sight,
    Wait,
    describe,
    poll_delay,
)

if TYPE_CHECKING:
    from vmssctl.gateway import Gateway


class Surge(Common):
    """Add VMs on the new model, wait until they are good, retire as many old ones; capacity never dips.

    Crash-safe by observation: the batch records the highest instance id before it (the new VMs are above it),
    the surge size and the base capacity; a resumed run sees whether the scale-out landed, which new VMs are
    good, and which retiring VMs are already gone, and never deletes twice.
    """

    name = "surge"

    def observe(self, api: Gateway, phase: Phase, policy: RolloutPolicy, sight: Sight) -> Mapping[str, object]:
        """The load balancers' view of each VM, when the policy drains and the next decision needs it."""
        return drain.observe(api, policy, phase, sight)

    def on_halt(self) -> list[Action]:
        """Stopping early: readmit the old VMs drained for retiring and not deleted."""
        return [drain.ReadmitDrained()]

    def remaining(self, obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs) -> Plan:
        """Batches of the surge size over the old VMs (the canary first); the floor is all of them."""
        open_batch = phase.open_batch
        in_flight = set(open_batch.instance_ids) if open_batch else set()
        base = int(open_batch.meta.get("base", 0)) if open_batch else len(obs.instances)
        size = policy.surge_count(base)
        old = [i.instance_id for i in obs.instances if _surge_scope(i, policy, needs)
               and i.instance_id not in in_flight and not _is_new(i, open_batch)]
        if open_batch is not None and open_batch.state != "retiring":
            old = old[int(open_batch.meta.get("surge", 0)):]  # the batch in flight will retire that many of them
        canary = _surge_canary(policy, phase) if open_batch is None else 0
        batches = ([old[:canary]] if canary else []) + [old[k:k + size] for k in range(canary, len(old), size)]
        return Plan(batches, base, 0, base, [])

    def judged(self, batch: Batch, instances: tuple[Instance, ...] | list[Instance]) -> list[str] | None:
        """The VMs the batch added (none while it retires old ones: their deletes are watched, not judged)."""
        return None if batch.state == "retiring" else surge_judged(batch, instances)

    def watched(self, batch: Batch, instances: tuple[Instance, ...] | list[Instance]) -> list[str]:
        return list(batch.instance_ids) if batch.state == "retiring" else surge_judged(batch, instances)

    def replacing(self, batch: Batch) -> int:
        """The VMs it retires once chosen; before, as many as it adds (its plan no longer lists them)."""
        return len(batch.instance_ids) if batch.state == "retiring" else int(batch.meta.get("surge", 0))

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
                return closed(policy, obs)
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
        candidates = [i.instance_id for i in obs.instances
                      if _surge_scope(i, policy, needs) and not _is_new(i, batch) and i.provisioning not in busy]
        return drain.before_retiring(obs, policy, batch, [i.instance_id for i in new],
                                     lambda: retire(list(obs.instances), candidates, meta["surge"]))

    @staticmethod
    def _scale_out(capacity: int, meta: dict, obs: Observation, phase: Phase, policy: RolloutPolicy) -> ScaleOut:
        """Raise the capacity; the first look comes when earlier batches' new VMs were ready; on a refusal, go on
        in place if ``--surge-fallback in-place`` says so."""
        fallback = replace(policy, strategy="in-place", max_surge=None) if policy.surge_fallback == "in-place" \
            else None
        return ScaleOut(capacity, meta, poll_delay(replace(obs, elapsed=0.0), phase, policy, [], ready_times(phase)),
                        fallback, "surge_refused", "the surge's scale-out", int(meta["surge"]), int(meta["base"]))


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

