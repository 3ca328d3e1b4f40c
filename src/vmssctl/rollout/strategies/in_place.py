"""In place: batches upgraded where they stand (manualupgrade, or reimage for a 'latest' refresh), within the
floor the unavailability budget leaves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from vmssctl.model import Instance
from vmssctl.plan import Plan, fit_to_floor, make_plan
from vmssctl.policy import RolloutPolicy
from vmssctl.rollout import windows
from vmssctl.rollout.journal import Batch
from vmssctl.rollout.strategies import drain
from vmssctl.rollout.strategies.base import PAUSE_POLL, Common, closed, judge_batch, soak
from vmssctl.rollout.turn import (
    MODEL_WAIT,
    Action,
    Finish,
    Needs,
    Observation,
    Pause,
    Phase,
    Reissue,
    Sight,
    Start,
    Wait,
    poll_delay,
)

if TYPE_CHECKING:
    from vmssctl.gateway import Gateway


class InPlace(Common):
    """Batches upgraded where they stand (manualupgrade, or reimage for a 'latest' refresh), within the floor."""

    name = "in-place"

    def observe(self, api: Gateway, phase: Phase, policy: RolloutPolicy, sight: Sight) -> Mapping[str, object]:
        """The load balancers' view of each VM, when the policy drains and the next decision needs it."""
        return drain.observe(api, policy, phase, sight)

    def judged(self, batch: Batch, instances: tuple[Instance, ...] | list[Instance]) -> list[str] | None:
        return None if drain.draining(batch) else list(batch.instance_ids)

    def watched(self, batch: Batch, instances: tuple[Instance, ...] | list[Instance]) -> list[str]:
        return [] if drain.draining(batch) else list(batch.instance_ids)

    def on_halt(self) -> list[Action]:
        """Stopping early: readmit what was drained (nothing when nothing was)."""
        return [drain.ReadmitDrained()]

    def remaining(self, obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs) -> Plan:
        open_batch = phase.open_batch
        in_flight = set(open_batch.instance_ids) if open_batch else set()
        return make_plan(list(obs.instances), policy, lambda i: needs(i) and i.instance_id not in in_flight,
                         canary=0 if (phase.canary_done or phase.kind != "forward") else None)

    def next(self, obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs, plan: Plan) -> Action:
        by_id = obs.by_id
        batch = phase.open_batch
        if batch is not None:
            draining = drain.step(obs, policy, batch)
            if draining is not None:
                return draining
            if batch.state == "issuing" and not drain.draining(batch):  # did the call land? re-issue what never
                # visibly started
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
        settled = {iid for iid, i in by_id.items() if i.provisioning in ("succeeded", "failed")}
        ready = [i for i in plan.batches[0] if i in settled]
        if not ready:
            return Wait(policy.poll, "the next instances are busy with another operation")
        if phase.kind == "forward" and not windows.is_open(policy.windows, obs.now):
            return closed(policy, obs)
        serving = drain.serving(obs)
        ids = fit_to_floor(ready, by_id, plan.floor, serving)
        if not ids:
            since = phase.floor_wait_since if phase.floor_wait_since is not None else obs.now
            if obs.now - since > policy.health_timeout:
                n = sum(1 for i in obs.instances if serving(i))
                return Finish(f"only {n} serving instance(s) for {policy.health_timeout:.0f}s; starting "
                              f"the next batch would go below the floor of {plan.floor}")
            return Wait(policy.poll, "the floor", floor_wait_since=since)
        meta = drain.start_meta(obs, policy, ids)
        if meta is not None:  # recorded now, upgraded once drained
            return Start(tuple(ids), plan.floor, 0.0, meta, issue=False)
        # the batch's VMs stop serving now; the first look is a while off (nothing to see the moment it starts)
        return Start(tuple(ids), plan.floor, poll_delay(replace(obs, elapsed=0.0), phase, policy, list(ids)))


