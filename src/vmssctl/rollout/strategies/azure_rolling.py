"""Azure's own rolling upgrade (a Rolling or Automatic set), watched, judged and gated like a batch of ours."""

from __future__ import annotations

from vmssctl.plan import Plan
from vmssctl.policy import AZURE_ROLLING, Amount, RolloutPolicy
from vmssctl.rollout.strategies.base import Common, judge_batch
from vmssctl.rollout.turn import (
    Action,
    Adopt,
    CancelUpgrade,
    Finish,
    Needs,
    Observation,
    Phase,
    Wait,
    protected,
)


class AzureRolling(Common):
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
        return Wait(policy.poll, "Azure's rolling upgrade, between its batches", floor_wait_since=since,
                    announce=True, by_floor=False)  # (Azure pauses, not the floor: said as what it is)


