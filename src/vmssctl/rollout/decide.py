"""Decide: from one observation and what the journal says of this phase, the one next action. Pure: no I/O.

The engine's turn is observe (the only ARM reads: instances, the model when it matters, the gates'
verdicts) → ``decide`` → act (the only writes: ARM calls, journal, events). Like Kubernetes' deployment
controller, each turn does one thing and returns; everything decide needs is in its arguments, so its
every branch is a table test (``tests/test_decide.py``) that runs in microseconds. The checks every
strategy shares are here; what moves the instances is the phase's strategy (``strategies/``).
"""

from __future__ import annotations

from vmssctl.model import ImageRef
from vmssctl.plan import Plan
from vmssctl.policy import RolloutPolicy
from vmssctl.rollout.strategies import for_phase
from vmssctl.rollout.turn import Action, ModelChanged, Needs, Observation, Phase, Stop
from vmssctl.target import same_image


def remaining(obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs) -> Plan:
    """The plan for what is left after the batch in flight (whose VMs may already look done while judged)."""
    return for_phase(policy, phase).remaining(obs, phase, policy, needs)


def decide(obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs, wanted: ImageRef,
           plan: Plan | None = None) -> Action:
    """The one next action of this phase (``wanted``: the image this phase puts on the instances; ``plan``: this
    turn's ``remaining``, when the caller has worked it out already)."""
    if obs.requested == "abort":
        return Stop("abort")
    if obs.requested == "rollback" and phase.kind == "forward":
        return Stop("rollback")
    strategy = for_phase(policy, phase)
    if strategy.changes_model and obs.model is not None and not same_image(obs.model.image, wanted):
        return ModelChanged(f"the scale set's image was changed outside this rollout (now {obs.model.image}, this "
                            f"rollout wants {wanted}); stopping with nothing overwritten")
    return strategy.next(obs, phase, policy, needs,
                         plan if plan is not None else strategy.remaining(obs, phase, policy, needs))
