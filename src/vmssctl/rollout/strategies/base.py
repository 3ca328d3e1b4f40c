"""What every strategy shares: the protocol a strategy answers to, the answers most give alike, and the phase
state all of them honour (the soak after a batch, a batch judged, the maintenance windows)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from vmssctl.model import Instance, id_key
from vmssctl.plan import Plan
from vmssctl.policy import RolloutPolicy
from vmssctl.rollout import windows
from vmssctl.rollout.gates import BAD, GOOD
from vmssctl.rollout.journal import Batch

if TYPE_CHECKING:
    from vmssctl.gateway import Gateway
from vmssctl.rollout.turn import (
    Action,
    Judge,
    Needs,
    Observation,
    Phase,
    Sight,
    Soaked,
    Wait,
    describe,
    failure_reason,
    poll_delay,
    too_many_failed,
)

PAUSE_POLL = 5.0  # longest look between two turns of a paused rollout (a person may resume it any moment)


class Strategy(Protocol):
    name: str
    reads_rolling: bool  # does a turn read Azure's own rolling upgrade of the set?
    changes_model: bool  # does the rollout put the image in this set's model (not so: a new set gets it)?

    def observe(self, api: Gateway, phase: Phase, policy: RolloutPolicy, sight: Sight) -> Mapping[str, object]:
        """What a turn reads for this strategy beyond the set's instances (another set, the load balancers):
        ``obs.seen``; ``sight``: what the turn knows already."""
        ...

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

    def replacing(self, batch: Batch) -> int:
        """How many of the set's VMs the open batch moves to the new image (the progress's "in flight"): its
        instances, or a surge's count before it has chosen the VMs it retires."""
        ...

    def elsewhere(self, batch: Batch) -> str | None:
        """The scale set whose instances the open batch is judged on (ARM's view and the gates), when it is not the
        rollout's own (blue/green's new set); None: the rollout's set."""
        ...

    def on_halt(self) -> list[Action]:
        """What to undo when the phase stops early (abort, rollback, a failure)."""
        ...


class Common:
    """What most strategies answer alike: the batch's own instances are judged and watched; nothing to undo."""

    reads_rolling = False
    changes_model = True

    def observe(self, api: Gateway, phase: Phase, policy: RolloutPolicy, sight: Sight) -> Mapping[str, object]:
        return {}

    def judged(self, batch: Batch, instances: tuple[Instance, ...] | list[Instance]) -> list[str] | None:
        return list(batch.instance_ids)

    def watched(self, batch: Batch, instances: tuple[Instance, ...] | list[Instance]) -> list[str]:
        return list(batch.instance_ids)

    def replacing(self, batch: Batch) -> int:
        return len(batch.instance_ids)

    def elsewhere(self, batch: Batch) -> str | None:
        return None

    def on_halt(self) -> list[Action]:
        return []


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


def closed(policy: RolloutPolicy, obs: Observation) -> Wait:
    """Outside every maintenance window: wait until the next one opens (a started batch is never held back; a
    rollback does not wait for a window)."""
    opens = windows.next_open(policy.windows, obs.now)
    at = time.strftime("%a %H:%M UTC", time.gmtime(opens))
    return Wait(max(1.0, opens - obs.now), f"outside the maintenance windows: the next opens {at}", announce=True)


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


