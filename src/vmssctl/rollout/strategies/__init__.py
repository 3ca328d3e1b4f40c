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

from vmssctl.policy import AZURE_ROLLING, RolloutPolicy
from vmssctl.rollout.strategies.azure_rolling import AzureRolling
from vmssctl.rollout.strategies.base import PAUSE_POLL, Common, Strategy, judge_batch, soak
from vmssctl.rollout.strategies.in_place import InPlace
from vmssctl.rollout.strategies.surge import Surge, ready_times, surge_judged
from vmssctl.rollout.turn import Phase, surging

IN_PLACE, SURGE, AZURE = InPlace(), Surge(), AzureRolling()
REGISTERED: dict[str, Strategy] = {}  # strategies beyond the built-in ones, by the name a policy gives


def register(strategy: Strategy) -> Strategy:
    """Make a strategy a policy can name (``RolloutPolicy.strategy``): one file, one call."""
    REGISTERED[strategy.name] = strategy
    return strategy


def for_phase(policy: RolloutPolicy, phase: Phase) -> Strategy:
    """The policy's strategy for this phase: rolling back is in place, except where Azure's upgrade moves the
    instances (a Rolling or Automatic set), which it does both ways, and a registered strategy, which owns
    both phases."""
    if policy.strategy in REGISTERED:
        return REGISTERED[policy.strategy]
    if policy.strategy == AZURE_ROLLING:
        return AZURE
    return SURGE if surging(policy, phase) else IN_PLACE


def of_policy(policy: RolloutPolicy) -> Strategy:
    """The policy's strategy going forward (what a rollout that stops early asks what to undo)."""
    return for_phase(policy, Phase("forward"))


__all__ = ["AZURE", "IN_PLACE", "PAUSE_POLL", "REGISTERED", "SURGE", "Common", "Strategy", "for_phase",
           "judge_batch", "of_policy", "ready_times", "register", "soak", "surge_judged"]

from vmssctl.rollout.strategies import blue_green as _blue_green  # noqa: E402,F401  (registers itself)
