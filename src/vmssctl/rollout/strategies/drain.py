"""Draining a batch through the load balancers in front of the set (``--drain lb``), as phase state of the
in-place strategy: nothing blocks, each turn decides from what it sees.

A batch is recorded with the moment its drain began (intent first), then its VMs' admin state is set Down (no new
connections; established ones kept), the batch waits ``--drain-timeout``, is upgraded, and once every verdict is
in, its VMs are readmitted (admin state None) and the batch is judged only when the load balancers see its good
VMs Up again. Every step is re-checked against what Network says: a crash anywhere is resumed by running again
(an admin state not yet Down is set again, a readmission that did not land is made again), and a rollout that
stops early readmits what it drained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vmssctl.policy import RolloutPolicy
from vmssctl.rollout.gates import BAD, GOOD
from vmssctl.rollout.journal import Batch
from vmssctl.rollout.turn import Action, Host, Observation, Phase, Wait

if TYPE_CHECKING:
    from vmssctl.gateway import Gateway

DRAIN, ISSUED, READMITTED = "drain", "drainIssued", "readmitted"  # a batch's meta: when each step began
UP_POLL = 5.0  # how often to ask whether readmitted VMs are Up again (a probe's usual interval)


def observe(api: Gateway, policy: RolloutPolicy) -> Mapping[str, object]:
    """What the load balancers say of each VM of the set (``lb``: instance id -> up, admin state), when the
    policy drains; ``lb`` is None when Network cannot be reached from here, {} when the set has no pool."""
    if policy.drain != "lb":
        return {}
    network = api.network()
    if network is None:
        return {"lb": None}
    model = api.get()
    if not model.lb_pools:
        return {"lb": {}}
    by: dict[str, dict] = {}
    for b in network.backends(model):
        row = by.setdefault(b.instance_id, {"up": True, "admin": "None"})
        row["up"] = row["up"] and b.state == "Up"  # Up only if every rule sends it new connections
        if b.admin != "None":
            row["admin"] = b.admin
    return {"lb": by}


def start_meta(obs: Observation, policy: RolloutPolicy, ids: list[str]) -> dict | None:
    """The meta a new batch is recorded with when it is to be drained first (None: not drained)."""
    lb = obs.seen.get("lb")
    if policy.drain != "lb" or not isinstance(lb, dict) or not any(i in lb for i in ids):
        return None
    return {DRAIN: obs.now}


def draining(batch: Batch) -> bool:
    """Recorded for a drain, and not upgraded yet (its VMs are judged only once they are)."""
    return DRAIN in batch.meta and not batch.meta.get(ISSUED)


def step(obs: Observation, policy: RolloutPolicy, batch: Batch) -> Action | None:
    """The drain's part of an open batch's turn; None when nothing of it is pending (judge as usual)."""
    if DRAIN not in batch.meta:
        return None
    lb = obs.seen.get("lb")
    lb = lb if isinstance(lb, dict) else {}
    ids = list(batch.instance_ids)
    if not batch.meta.get(ISSUED):
        not_down = tuple(i for i in ids if i in lb and lb[i]["admin"] != "Down")
        if not_down:
            return SetAdmin(not_down, "Down")
        ends = float(batch.meta[DRAIN]) + policy.drain_timeout
        return Wait(ends - obs.now, "draining") if obs.now < ends else IssueDrained(batch)
    settled = len(obs.verdicts) >= len(ids) and all(v.state in (GOOD, BAD) for v in obs.verdicts.values())
    if not batch.meta.get(READMITTED):
        return Readmit(batch) if settled else None
    still_down = tuple(i for i in ids if i in lb and lb[i]["admin"] == "Down")
    if still_down:
        return SetAdmin(still_down, "None")
    good = [i for i, v in obs.verdicts.items() if v.state == GOOD]
    not_up = [i for i in good if i in lb and not lb[i]["up"]]
    if not_up and obs.now - float(batch.meta[READMITTED]) < policy.health_timeout:
        return Wait(min(policy.poll, UP_POLL), "the load balancers to see them Up")
    return None


@dataclass(frozen=True)
class SetAdmin:
    """These VMs' admin state in every pool of the set (Down: drained; None: the probe decides)."""

    ids: tuple[str, ...]
    state: str

    def apply(self, host: Host, phase: Phase) -> str | None:
        network = host.api.network()
        if network is None:
            return "the load balancers in front of the set cannot be reached to drain or readmit its VMs"
        model = host.arm(host.api.get)
        host.arm(lambda: network.set_admin(model, list(self.ids), self.state))
        host.emit("drained" if self.state == "Down" else "readmitted", instances=list(self.ids))
        return None


@dataclass(frozen=True)
class IssueDrained:
    """The drain is over: upgrade the batch (its health timeout starts now)."""

    batch: Batch

    def apply(self, host: Host, phase: Phase) -> str | None:
        now = host.now()
        host.update_batch(self.batch, meta={**self.batch.meta, ISSUED: now}, started=now)
        host.issue(self.batch, list(self.batch.instance_ids))
        return None


@dataclass(frozen=True)
class Readmit:
    """Every verdict is in: the batch's VMs go back into rotation (intent recorded first)."""

    batch: Batch

    def apply(self, host: Host, phase: Phase) -> str | None:
        host.update_batch(self.batch, meta={**self.batch.meta, READMITTED: host.now()})
        return SetAdmin(tuple(self.batch.instance_ids), "None").apply(host, phase)


@dataclass(frozen=True)
class ReadmitDrained:
    """A rollout that stops early readmits what it drained and has not readmitted."""

    def apply(self, host: Host, phase: Phase) -> str | None:
        for b in phase.batches:
            if DRAIN in b.meta and not b.meta.get(READMITTED):
                Readmit(b).apply(host, phase)
        return None
