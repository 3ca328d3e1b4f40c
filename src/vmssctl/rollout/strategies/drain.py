"""Draining VMs before they are disrupted, through the load balancers in front of the set (``--drain lb``) or a
command (``--drain hook``), as phase state of the in-place and surge strategies: nothing blocks, each turn decides
from what it sees (what stands in front, Application Gateways included, and what the journal recorded).

In place, a batch is recorded with the moment its drain began (intent first), then its VMs' admin state is set
Down (no new connections; established ones kept), the batch waits ``--drain-timeout``, is upgraded, and once every
verdict is in, its VMs are readmitted (admin state None) and the batch is judged only when the load balancers see
its good VMs Up again. A surge batch's new VMs count only once the load balancers see them Up; then the old VMs it
retires are chosen and recorded, drained, and deleted after the drain. Every step is re-checked against what
Network says: a crash anywhere is resumed by running again (an admin state not yet Down is set again, a
readmission that did not land is made again), and a rollout that stops early readmits what it drained.

A hook's word cannot be observed, so it is recorded: a resumed rollout runs it again only when no answer was
recorded (hooks must be idempotent); its readmitted VMs, too, count once what stands in front sees them Up.

An instance counts toward the floor only while the load balancers would send it new connections (``serving``).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from vmssctl.errors import Forbidden, PreconditionFailed
from vmssctl.inputs import one_line
from vmssctl.model import Instance
from vmssctl.policy import RolloutPolicy
from vmssctl.rollout.gates import BAD, GOOD
from vmssctl.rollout.journal import Batch
from vmssctl.rollout.turn import Action, DropAdded, Host, ModelChanged, Observation, Phase, Retire, Sight, Wait

if TYPE_CHECKING:
    from vmssctl.gateway import Gateway

DRAIN, ISSUED, READMITTED = "drain", "drainIssued", "readmitted"  # a batch's meta: when each step began
RETIREES = "retirees"  # a surge batch's meta: the old VMs it drains, then deletes
FRONTS = "fronts"  # the load balancers' rules and probes in front of the set when a drain began
HOOK, HOOK_DRAINED, HOOK_READMITTED = "drainHook", "hookDrained", "hookReadmitted"  # --drain hook: the command, and
# when it said the VMs were out of rotation, and back
HOOK_TIMEOUT = 300.0  # real seconds a drain hook may take
GATEWAY = "viaGateway"  # --drain appgw: the batch's VMs leave the Application Gateways' pools (not an admin state)
# what draining does on the set's load balancers, as RBAC names it (a built-in Network Contributor has them all)
NEEDS = ("Microsoft.Network/loadBalancers/read", "Microsoft.Network/loadBalancers/loadBalancingRules/health/action",
         "Microsoft.Network/loadBalancers/backendAddressPools/read",
         "Microsoft.Network/loadBalancers/backendAddressPools/write")
UP_POLL = 5.0  # how often to ask whether readmitted VMs are Up again (a probe's usual interval)


def observe(api: Gateway, policy: RolloutPolicy, phase: Phase, sight: Sight) -> Mapping[str, object]:
    """What the load balancers say of each VM of the set (``lb``: instance id -> up, admin state), when the
    policy drains and the next decision needs it; ``lb`` is None when Network cannot be reached from here, {}
    when the set has no pool. Not read while the open batch is upgrading (or its new VMs coming up, or its old
    ones being deleted): nothing then depends on it, and a turn costs Compute's reads alone."""
    if policy.drain not in ("lb", "hook", "appgw") or not _needed(phase.open_batch, sight.settled):
        return {}
    network = api.network()
    if network is None:
        return {"lb": None}
    model = sight.model or api.get()
    if not model.fronted:
        return {"lb": {}}
    by, seen = by_instance(network.backends(model, health=_health_needed(phase.open_batch)))
    return {"lb": by, FRONTS: seen}


def by_instance(backends: list) -> tuple[dict[str, dict], list[str]]:
    """What the load balancers and gateways say of each VM (instance id -> up, admin state, in a load balancer's
    pool, in a gateway's), and the rules in front (``fronts``)."""
    by: dict[str, dict] = {}
    for b in backends:
        row = by.setdefault(b.instance_id, {"up": True, "admin": "None", "drains": False, "gw": False})
        row["drains"] = row["drains"] or not b.gateway  # in a load balancer's pool: an admin state drains it
        row["gw"] = row["gw"] or b.gateway  # in an Application Gateway's pool
        row["up"] = row["up"] and b.state == "Up"  # Up only if every rule sends it new connections (Unknown: not
        # asked, and not used: see _health_needed)
        if b.admin != "None":
            row["admin"] = b.admin
    return by, fronts(backends)


def _needed(batch: Batch | None, settled: bool) -> bool:
    """Does this turn's decision depend on the load balancers? Between batches (the floor, the next drain),
    while a batch drains or is readmitted, and once a surge batch's new VMs are judged; not while VMs upgrade,
    come up or are deleted."""
    if batch is None:
        return True
    if batch.state == "retiring":
        return False
    if HOOK in batch.meta:  # the hook drains: only whether readmitted VMs are Up again matters
        return bool(batch.meta.get(READMITTED))
    if DRAIN in batch.meta:  # in place (drained first) or a surge batch draining its retirees
        return not batch.meta.get(ISSUED) or bool(batch.meta.get(READMITTED)) or settled or RETIREES in batch.meta
    return settled and "surge" in batch.meta  # a surge batch's new VMs judged: are they Up?


def _health_needed(batch: Batch | None) -> bool:
    """Is Up-ness needed (the rules' health, an LRO each), or only admin states (one GET)? Needed for the floor
    between batches, once VMs are readmitted and for a surge's new VMs; not while VMs are being drained."""
    return batch is None or bool(batch.meta.get(READMITTED)) or DRAIN not in batch.meta


def fronts(backends: list) -> list[str]:
    """What stands in front of the set, as a drain relies on it: each rule on its pools and the rule's probe."""
    return sorted({f"{b.load_balancer} rule {b.rule} (pool {b.pool}, probe {b.probe or 'none'})" for b in backends})


def _fronts_seen(obs: Observation) -> list[str]:
    seen = obs.seen.get(FRONTS)
    return [str(f) for f in seen] if isinstance(seen, list) else []


def changed_fronts(obs: Observation, batch: Batch) -> ModelChanged | None:
    """Someone else changed the load balancers in front of the set since this batch's drain began (a rule or a
    probe removed, added or swapped): stop, with what changed; what was drained is readmitted."""
    was, now = batch.meta.get(FRONTS), obs.seen.get(FRONTS)
    if not isinstance(was, list) or not isinstance(now, list) or not now or sorted(was) == now:
        return None
    gone, new = [f for f in was if f not in now], [f for f in now if f not in was]
    what = "; ".join([*(f"gone: {f}" for f in gone), *(f"new: {f}" for f in new)])
    return ModelChanged(f"the load balancers in front of the set changed during the rollout ({what}); drained "
                        "instances readmitted, nothing more changed: check the load balancers and run again")


def _lb(obs: Observation) -> dict:
    lb = obs.seen.get("lb")
    return lb if isinstance(lb, dict) else {}


def _drains(lb: dict, iid: str) -> bool:
    """Is the VM in a load balancer's pool, where an admin state takes it out of rotation? (An Application
    Gateway's member only counts: Up or not.)"""
    return iid in lb and bool(lb[iid].get("drains", True))


def serving(obs: Observation) -> Callable[[Instance], bool]:
    """Does an instance count toward the floor? Healthy, and, behind a load balancer, sent new connections by
    every rule (probe Up, admin state not Down): what users see, not only what the health extension says."""
    lb = _lb(obs)

    def counts(inst: Instance) -> bool:
        row = lb.get(inst.instance_id)
        return inst.healthy and (row is None or (row["up"] and row["admin"] != "Down"))
    return counts


def start_meta(obs: Observation, policy: RolloutPolicy, ids: list[str]) -> dict | None:
    """The meta a new batch is recorded with when it is to be drained first (None: not drained)."""
    if policy.drain == "hook":
        return {DRAIN: obs.now, HOOK: policy.drain_hook}
    lb = obs.seen.get("lb")
    way = "appgw" if policy.drain == "appgw" else "lb"
    if policy.drain not in ("lb", "appgw") or not isinstance(lb, dict) or not still_in(lb, ids, way):
        return None
    return {DRAIN: obs.now, FRONTS: _fronts_seen(obs), **({GATEWAY: True} if way == "appgw" else {})}


def _way(batch: Batch) -> str:
    return "appgw" if batch.meta.get(GATEWAY) else "lb"


def still_in(lb: dict, ids: list[str] | tuple[str, ...], way: str) -> tuple[str, ...]:
    """The VMs not drained yet: still in an Application Gateway's pool (``appgw``), or in a load balancer's pool
    with an admin state other than Down (``lb``)."""
    if way == "appgw":
        return tuple(i for i in ids if i in lb and lb[i].get("gw"))
    return tuple(i for i in ids if _drains(lb, i) and lb[i]["admin"] != "Down")


def held_out(lb: dict, ids: list[str] | tuple[str, ...], way: str) -> tuple[str, ...]:
    """Of ``ids``, the VMs held out of rotation: out of the Application Gateways' pools (``appgw``), or with an
    admin state of Down in a load balancer's pool (``lb``)."""
    if way == "appgw":
        return tuple(i for i in ids if not (i in lb and lb[i].get("gw")))
    return tuple(i for i in ids if i in lb and lb[i]["admin"] == "Down")


def take_out(ids: tuple[str, ...], way: str, on: str | None = None) -> SetAdmin | GatewayPools:
    """Out of rotation, the ``way`` the VMs are drained (``on``: of another set than the rollout's)."""
    return GatewayPools(ids, False, on) if way == "appgw" else SetAdmin(ids, "Down", on)


def put_back(ids: tuple[str, ...], way: str, on: str | None = None) -> SetAdmin | GatewayPools:
    """Back into rotation, the ``way`` the VMs were drained."""
    return GatewayPools(ids, True, on) if way == "appgw" else SetAdmin(ids, "None", on)


def draining(batch: Batch) -> bool:
    """Recorded for a drain, and not upgraded yet (its VMs are judged only once they are)."""
    return DRAIN in batch.meta and not batch.meta.get(ISSUED)


def step(obs: Observation, policy: RolloutPolicy, batch: Batch) -> Action | None:
    """The drain's part of an open batch's turn; None when nothing of it is pending (judge as usual)."""
    if DRAIN not in batch.meta:
        return None
    changed = changed_fronts(obs, batch)
    if changed is not None:
        return changed
    lb, hook = _lb(obs), batch.meta.get(HOOK)
    ids = list(batch.instance_ids)
    if not batch.meta.get(ISSUED):
        if hook and not batch.meta.get(HOOK_DRAINED):
            return RunHook(batch, "drain", tuple(ids))
        not_out = () if hook else still_in(lb, ids, _way(batch))
        if not_out:
            return take_out(not_out, _way(batch))
        ends = float(batch.meta[DRAIN]) + policy.drain_timeout
        return Wait(ends - obs.now, "draining") if obs.now < ends else IssueDrained(batch)
    settled = len(obs.verdicts) >= len(ids) and all(v.state in (GOOD, BAD) for v in obs.verdicts.values())
    if not batch.meta.get(READMITTED):
        if not settled:
            return None
        if _way(batch) == "appgw" and not hook:  # only those an upgrade to the latest model has not put back
            return Readmit(batch, held_out(lb, [i for i in ids if i in obs.by_id], "appgw"))
        return Readmit(batch)
    if hook and not batch.meta.get(HOOK_READMITTED):  # (the hook's word, recorded, is all there is of it)
        return RunHook(batch, "readmit", tuple(ids))
    if not hook:  # (an upgrade to the latest model puts a gateway's VMs back already)
        out = held_out(lb, [i for i in ids if i in obs.by_id] if _way(batch) == "appgw" else ids, _way(batch))
        if out:
            return put_back(out, _way(batch))
    good = [i for i, v in obs.verdicts.items() if v.state == GOOD]
    not_up = [i for i in good if i in lb and not lb[i]["up"]]
    if not_up and obs.now - float(batch.meta[READMITTED]) < policy.health_timeout:
        return Wait(min(policy.poll, UP_POLL), "the load balancers to see them Up")
    return None


def before_retiring(obs: Observation, policy: RolloutPolicy, batch: Batch, new: list[str],
                    pick: Callable[[], list[str]]) -> Action:
    """A surge batch whose new VMs are all good: wait until the load balancers see them Up (they count only then;
    never Up within the health timeout fails them), choose and record the old VMs to retire, drain them, and
    retire them once ``--drain-timeout`` is over. Without a drain: retire at once."""
    lb = _lb(obs)
    if policy.drain == "hook":
        return _retire_by_hook(obs, policy, batch, new, pick)
    if policy.drain not in ("lb", "appgw") or not lb:
        return Retire(tuple(pick()))
    way = "appgw" if policy.drain == "appgw" else "lb"
    if RETIREES not in batch.meta:
        waiting = _until_new_up(obs, policy, new, lb)
        if waiting is not None:
            return waiting
        retirees = pick()
        if not still_in(lb, retirees, way):
            return Retire(tuple(retirees))  # in no pool: nothing to drain
        return DrainRetirees(batch, tuple(retirees), _fronts_seen(obs), gateway=way == "appgw")
    changed = changed_fronts(obs, batch)
    if changed is not None:
        return changed
    retirees = [i for i in batch.meta[RETIREES] if i in obs.by_id]
    not_out = still_in(lb, retirees, way)
    if not_out:
        return take_out(not_out, way)
    ends = float(batch.meta[DRAIN]) + policy.drain_timeout
    return Wait(ends - obs.now, "draining the instances to retire") if obs.now < ends else Retire(tuple(retirees))


def _until_new_up(obs: Observation, policy: RolloutPolicy, new: list[str], lb: dict) -> Action | None:
    """A surge batch's new VMs count once the load balancers (or gateways) in front see them Up: wait for that,
    within the health timeout; never Up: they failed. None: they are Up (or in front of nothing)."""
    not_up = [i for i in new if i in lb and not lb[i]["up"]]
    if not_up and obs.elapsed < policy.health_timeout:
        return Wait(min(policy.poll, UP_POLL), "the load balancers to see the new instances Up")
    if not_up:
        bad = dict.fromkeys(not_up, f"never Up in the load balancers within {policy.health_timeout:.0f}s")
        return DropAdded(tuple(new), bad, f"{len(not_up)} new instance(s) of the surge never Up in the load "
                         f"balancers: {', '.join(not_up)}")
    return None


def _retire_by_hook(obs: Observation, policy: RolloutPolicy, batch: Batch, new: list[str],
                    pick: Callable[[], list[str]]) -> Action:
    """``--drain hook`` for a surge batch: once its new VMs are Up in front (when something stands there),
    choose and record the old VMs, the hook drains them, the drain timeout passes, they are deleted."""
    if RETIREES not in batch.meta:
        return _until_new_up(obs, policy, new, _lb(obs)) or DrainRetirees(batch, tuple(pick()), [],
                                                                          policy.drain_hook)
    retirees = [i for i in batch.meta[RETIREES] if i in obs.by_id]
    if not batch.meta.get(HOOK_DRAINED):
        return RunHook(batch, "drain", tuple(retirees))
    ends = float(batch.meta[DRAIN]) + policy.drain_timeout
    return Wait(ends - obs.now, "draining the instances to retire") if obs.now < ends else Retire(tuple(retirees))


@dataclass(frozen=True)
class DrainRetirees:
    """Record the old VMs a surge batch retires and when their drain began (intent first), then drain them."""

    batch: Batch
    ids: tuple[str, ...]
    fronts: list[str]
    hook: str | None = None
    gateway: bool = False

    def apply(self, host: Host, phase: Phase) -> str | None:
        meta = {**self.batch.meta, DRAIN: host.now(), RETIREES: list(self.ids), FRONTS: self.fronts,
                **({HOOK: self.hook} if self.hook else {}), **({GATEWAY: True} if self.gateway else {})}
        host.update_batch(self.batch, meta=meta)
        if self.hook:
            return RunHook(replace(self.batch, meta=meta), "drain", self.ids).apply(host, phase)
        return take_out(self.ids, "appgw" if self.gateway else "lb").apply(host, phase)


@dataclass(frozen=True)
class RunHook:
    """``--drain hook``: run the batch's drain command for these VMs (``drain``: out of rotation; ``readmit``: back),
    and record that it said so. It is run again when a crash came between the two (it must be idempotent)."""

    batch: Batch
    op: str  # drain | readmit
    ids: tuple[str, ...]

    def apply(self, host: Host, phase: Phase) -> str | None:
        command = str(self.batch.meta[HOOK])
        env = {**os.environ, "VMSSCTL_DRAIN": self.op, "VMSSCTL_INSTANCES": ",".join(self.ids),
               "VMSSCTL_RESOURCE_GROUP": host.api.resource_group, "VMSSCTL_NAME": host.api.name}
        try:
            r = subprocess.run(command, shell=True, env=env, capture_output=True, timeout=HOOK_TIMEOUT)
            said = one_line((r.stderr or r.stdout).decode(errors="replace"))[:200]
            why = None if r.returncode == 0 else f"exited {r.returncode}: {said}"
        except subprocess.TimeoutExpired:
            why = f"did not end within {HOOK_TIMEOUT:.0f}s"
        except OSError as e:
            why = f"could not run: {e}"
        if why is not None:
            return f"the drain hook could not {self.op} instance(s) {', '.join(self.ids)}: {why}"
        host.update_batch(self.batch, meta={**self.batch.meta,
                                            HOOK_DRAINED if self.op == "drain" else HOOK_READMITTED: host.now()})
        host.emit("drained" if self.op == "drain" else "readmitted", instances=list(self.ids), by="hook")
        return None


@dataclass(frozen=True)
class SetAdmin:
    """These VMs' admin state in every pool of the set (Down: drained; None: the probe decides); ``on``: of
    another set than the rollout's (blue/green's new one)."""

    ids: tuple[str, ...]
    state: str
    on: str | None = None

    def apply(self, host: Host, phase: Phase) -> str | None:
        api = host.api.for_set(self.on) if self.on else host.api
        network = api.network()
        if network is None:
            return "the load balancers in front of the set cannot be reached to drain or readmit its VMs"
        model = host.arm(api.get)
        try:
            host.arm(lambda: network.set_admin(model, list(self.ids), self.state))
        except PreconditionFailed:  # changed by someone else between our read and write: the next turn looks again
            return None
        except Forbidden as e:  # (a permission taken away since the plan asked)
            what = "drain" if self.state == "Down" else "readmit"
            return (f"the load balancers refused to {what} instance(s) {', '.join(self.ids)}: the credential lacks "
                    f"{e.action or e}; grant it and run again")
        host.emit("drained" if self.state == "Down" else "readmitted", instances=list(self.ids),
                  **({"set": self.on} if self.on else {}))
        return None


@dataclass(frozen=True)
class GatewayPools:
    """These VMs out of the Application Gateways' pools (``member`` False: each VM's own network configuration
    without them; the gateway's connection draining lets their requests finish) or back in."""

    ids: tuple[str, ...]
    member: bool
    on: str | None = None  # of another set than the rollout's (blue/green's new one)

    def apply(self, host: Host, phase: Phase) -> str | None:
        api = host.api.for_set(self.on) if self.on else host.api
        try:
            host.arm(lambda: api.set_gateway_pools(list(self.ids), self.member))
        except PreconditionFailed:  # a VM changed between our read and write: the next turn looks again
            return None
        except Forbidden as e:
            what = "take" if not self.member else "put back"
            return (f"Compute refused to {what} instance(s) {', '.join(self.ids)} out of/into the Application "
                    f"Gateway pools: the credential lacks {e.action or e}; grant it and run again")
        host.emit("readmitted" if self.member else "drained", instances=list(self.ids), by="appgw",
                  **({"set": self.on} if self.on else {}))
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
    """Every verdict is in: the batch's VMs go back into rotation (intent recorded first); ``only``: the ones seen
    still out (None: all of them, unobserved)."""

    batch: Batch
    only: tuple[str, ...] | None = None

    def apply(self, host: Host, phase: Phase) -> str | None:
        meta = {**self.batch.meta, READMITTED: host.now()}
        host.update_batch(self.batch, meta=meta)
        ids = tuple(self.batch.meta.get(RETIREES, self.batch.instance_ids)) if self.only is None else self.only
        if self.batch.meta.get(HOOK):
            return RunHook(replace(self.batch, meta=meta), "readmit", ids).apply(host, phase)
        if self.batch.meta.get(GATEWAY) and not ids:
            return None
        return put_back(ids, _way(self.batch)).apply(host, phase)


@dataclass(frozen=True)
class ReadmitDrained:
    """A rollout that stops early readmits what it drained and has not readmitted (a surge batch's retirees
    once their deletes were issued are gone, not readmitted)."""

    def apply(self, host: Host, phase: Phase) -> str | None:
        for b in phase.batches:
            if DRAIN in b.meta and not b.meta.get(READMITTED) and \
                    not (RETIREES in b.meta and b.state in ("retiring", "succeeded")):
                refused = Readmit(b).apply(host, phase)
                if refused is not None:  # left Down: said, so that a person readmits them
                    host.emit("readmit_refused", reason=refused)
        return None
