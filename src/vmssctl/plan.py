"""Where the batches are decided: pure functions from observed instances and a policy.

The engine calls ``make_plan`` again after every batch with what it then observes, so the
plan always describes what is left; ``fit_to_floor`` trims a batch so the set never
drops below its healthy floor.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from vmssctl.model import Instance, id_key
from vmssctl.policy import RolloutPolicy


@dataclass(frozen=True)
class Plan:
    batches: list[list[str]]
    capacity: int
    max_unavailable: int
    floor: int  # healthy instances the set must keep at all times
    skipped: list[str]  # in scope but already on the target

    @property
    def pending(self) -> int:
        return sum(len(b) for b in self.batches)

    def to_json(self) -> dict:
        return {"batches": self.batches, "capacity": self.capacity, "maxUnavailable": self.max_unavailable,
                "floor": self.floor, "skipped": self.skipped}


def _group_key(policy: RolloutPolicy) -> Callable[[Instance], object] | None:
    return {
        "update-domain": lambda i: i.update_domain if i.update_domain is not None else -1,
        "fault-domain": lambda i: i.fault_domain if i.fault_domain is not None else -1,
        "zone": lambda i: i.zone or "",
    }.get(policy.by)


def max_unavailable(policy: RolloutPolicy, capacity: int, largest_batch: int) -> int:
    """Explicit ``--max-unavailable`` (count or %), else the largest batch; at least one.

    A batch size alone never takes the whole set down: without an explicit amount the
    budget stops one short of the capacity (20 instances, ``--batch-size 1000``: 19 at a
    time, floor 1). Only ``--max-unavailable 100%`` (or a count of at least the capacity)
    gives a floor of 0, and a one-instance set needs exactly that (``prepare`` says so).
    """
    if policy.max_unavailable is not None:
        return max(1, policy.max_unavailable.of(capacity))
    return max(1, min(largest_batch, capacity - 1))


def takes_everything_down(policy: RolloutPolicy, plan: Plan) -> bool:
    """Would this plan let every instance be down at once without the user having said so?"""
    explicit = policy.max_unavailable is not None and (
        policy.max_unavailable.everything or
        (not policy.max_unavailable.percent and policy.max_unavailable.value >= plan.capacity))
    return plan.capacity > 0 and plan.floor == 0 and not explicit


def make_plan(instances: list[Instance], policy: RolloutPolicy, needs_upgrade: Callable[[Instance], bool],
              canary: int | None = None) -> Plan:
    """Order and batch the instances that still need the upgrade.

    ``needs_upgrade`` says which instances are behind; ``canary`` overrides the policy's
    (the engine passes 0 once the canary batch has run).
    """
    capacity = len(instances)
    scope = [i for i in instances if not policy.instances or i.instance_id in policy.instances]
    pending = [i for i in scope if needs_upgrade(i)]
    skipped = [i.instance_id for i in scope if not needs_upgrade(i)]
    group_key = _group_key(policy)

    def order(i: Instance) -> tuple:
        return (i.healthy if policy.prioritize_unhealthy else False,
                group_key(i) if group_key else 0, id_key(i.instance_id))

    pending.sort(key=order)
    canary = policy.canary if canary is None else canary
    batches: list[list[Instance]] = []
    if canary and pending:
        batches.append(pending[:canary])
        pending = pending[canary:]
    if group_key is None:
        size = policy.batch_count(capacity)
        batches += [pending[k:k + size] for k in range(0, len(pending), size)]
    else:
        groups: dict[object, list[Instance]] = {}
        unhealthy_first = [i for i in pending if policy.prioritize_unhealthy and not i.healthy]
        if unhealthy_first:
            batches.append(unhealthy_first)
        for inst in pending:
            if inst not in unhealthy_first:
                groups.setdefault(group_key(inst), []).append(inst)
        batches += [groups[k] for k in sorted(groups, key=lambda k: (str(type(k)), k))]
    largest = max((len(b) for b in batches[1 if canary else 0:]), default=1)
    limit = max_unavailable(policy, capacity, max(largest, len(batches[0]) if batches else 1))
    # a group bigger than the unavailability budget is split into budget-sized batches
    split: list[list[str]] = []
    for batch in batches:
        ids = [i.instance_id for i in batch]
        split += [ids[k:k + limit] for k in range(0, len(ids), limit)]
    return Plan(batches=split, capacity=capacity, max_unavailable=limit, floor=max(0, capacity - limit),
                skipped=skipped)


def fit_to_floor(batch: list[str], instances: dict[str, Instance], floor: int,
                 serving: Callable[[Instance], bool] | None = None) -> list[str]:
    """The part of ``batch`` that can go down now without the serving count dropping below ``floor``.

    Members not serving cost nothing (they are already down); serving ones spend the margin. ``serving``: does an
    instance count (default: healthy; behind a load balancer, also in its rotation).
    """
    counts = serving or (lambda i: i.healthy)
    margin = sum(1 for i in instances.values() if counts(i)) - floor
    out = []
    for iid in batch:
        inst = instances.get(iid)
        if inst is None:
            continue
        if not counts(inst):
            out.append(iid)
        elif margin > 0:
            out.append(iid)
            margin -= 1
    return out


def retire(instances: list[Instance], candidates: list[str], count: int) -> list[str]:
    """Which ``count`` of ``candidates`` to delete so zones, fault domains and update domains stay balanced.

    A surge adds VMs where Azure places them (the least-loaded domains); retiring from the most-loaded zone,
    then fault domain, then update domain (highest id first, as Compute's default scale-in) evens them out.
    """
    n_zone = Counter(i.zone for i in instances)
    n_fd = Counter((i.zone, i.fault_domain) for i in instances)
    n_ud = Counter((i.zone, i.update_domain) for i in instances)
    by_id = {i.instance_id: i for i in instances}
    pool = [by_id[c] for c in candidates if c in by_id]
    out: list[str] = []
    for _ in range(min(count, len(pool))):
        victim = max(pool, key=lambda i: (n_zone[i.zone], n_fd[i.zone, i.fault_domain],
                                          n_ud[i.zone, i.update_domain], id_key(i.instance_id)))
        pool.remove(victim)
        out.append(victim.instance_id)
        n_zone[victim.zone] -= 1
        n_fd[victim.zone, victim.fault_domain] -= 1
        n_ud[victim.zone, victim.update_domain] -= 1
    return out
