"""Blue/green: a new scale set ("green") on the new image beside the serving one ("blue"), in the same load balancer
pools (it is blue's model), traffic moved by draining blue, blue kept drained for ``--bake`` (a rollback readmits
it in seconds), then scaled to 0 (its model kept) or deleted (``--delete-blue``).

One batch, the green set, whose instances the engine judges (``elsewhere``: ARM's view and the gates, as any
batch's), and whose meta records each step before it is taken: the green set's name (created If-None-Match, so a
resumed rollout finds it by name and never makes a second one), when it was ready (healthy, passed the gates, Up in
every load balancer rule), when blue's drain began, when blue was retired. Undoing (green failed, or a rollback)
is the same steps backwards, also recorded: blue back to its capacity if it was scaled to 0, readmitted and seen
Up in the load balancers, and only then green drained and deleted, so the set that serves is never the one
drained: blue never stops serving before green serves, and never after, until the switch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

from vmssctl.errors import ArmError, NotFound, PreconditionFailed
from vmssctl.gateway import Gateway
from vmssctl.model import ImageRef, Instance, id_key
from vmssctl.plan import Plan
from vmssctl.policy import RolloutPolicy
from vmssctl.rollout.gates import GOOD
from vmssctl.rollout.journal import Batch
from vmssctl.rollout.strategies import Common, register
from vmssctl.rollout.strategies.base import poll_delay
from vmssctl.rollout.strategies.drain import UP_POLL, SetAdmin, by_instance, held_out, put_back, still_in, take_out
from vmssctl.rollout.turn import Action, Finish, Host, Needs, Observation, Phase, Sight, Wait, describe

NAME = "blue-green"
BAKE_POLL = 30.0  # how often green is judged again while blue bakes (a rollback asked for is seen as soon)
ROLLOUT_TAG = "vmssctl-rollout"
# the green batch's meta: what was done, and when (intent first)
GREEN, BLUE_CAPACITY, GREEN_CAPACITY = "green", "blue_capacity", "green_capacity"
READY, BLUE_DRAINED, BLUE_DOWN, WEIGHTED = "ready", "blue_drained", "blue_down", "weighted"
UNDO, UNDO_AT, BLUE_RESTORING, GREEN_DRAINED, GREEN_DELETING = (
    "undo", "undo_at", "blue_restoring", "green_drained", "green_deleting")


def green_name(blue: str, image: ImageRef) -> str:
    """The new set's name: the old one's and the image's short tag (its version, or the last part of its id or
    URI), within a scale set name's 64 letters, digits, '-', '_' and '.'."""
    raw = image.version or (image.id or image.uri or "green").rstrip("/").rsplit("/", 1)[-1]
    tag = "".join(c if c.isalnum() or c in "-_." else "-" for c in raw)[-20:].strip("-_.") or "green"
    return f"{blue[: 63 - len(tag)]}-{tag}"


# ------------------------------------------------------------------------------------ effects
@dataclass(frozen=True)
class CreateGreen:
    """Record the green set's name (intent first), then create it: this set's model, the wanted image, the
    capacity, tagged as this rollout's."""

    capacity: int
    blue_capacity: int
    name: str | None = None  # None: a new one, named now; else the recorded one (a create that never landed)

    def apply(self, host: Host, phase: Phase) -> str | None:
        name, green = self.name, _green(phase)
        if name is None:
            name = green_name(host.api.name, host.wanted)
            green = host.record_batch(phase.kind, [], {GREEN: name, BLUE_CAPACITY: self.blue_capacity,
                                                       GREEN_CAPACITY: self.capacity})
            host.emit("green_creating", name=name, capacity=self.capacity, image=str(host.wanted))
        try:
            host.arm(lambda: host.api.clone(name, host.wanted, self.capacity, {ROLLOUT_TAG: host.rollout_id}))
        except PreconditionFailed:  # it exists: created before a crash (observe says whose)
            pass
        except ArmError as e:  # refused outright (quota, SKU, a reference gone): nothing was created
            if green is not None:
                host.update_batch(green, state="failed", finished=host.now(), meta={**green.meta, UNDO: str(e),
                                                                                   GREEN_DELETING: host.now()})
            host.emit("green_refused", name=name, reason=str(e))
            return f"ARM refused to create the green scale set {name}: {e}; nothing was created"
        return None


@dataclass(frozen=True)
class Mark:
    """Record a step of the batch (``key``: now), then say it (``event``)."""

    batch: Batch
    key: str
    event: str
    data: Mapping[str, object] | None = None

    def apply(self, host: Host, phase: Phase) -> str | None:
        host.update_batch(self.batch, meta={**self.batch.meta, self.key: host.now(), **(self.data or {})})
        host.emit(self.event, green=self.batch.meta[GREEN], **(self.data or {}))
        return None


@dataclass(frozen=True)
class DrainBlue:
    """The switch: record that blue's drain began, then set blue's VMs Down in the load balancers (none there:
    nothing to drain, the bake still holds blue)."""

    batch: Batch
    ids: tuple[str, ...]
    gateway: bool = False  # out of the Application Gateways' pools, not by admin state

    def apply(self, host: Host, phase: Phase) -> str | None:
        Mark(self.batch, BLUE_DRAINED, "switching", {"drained": len(self.ids)}).apply(host, phase)
        return take_out(self.ids, "appgw" if self.gateway else "lb").apply(host, phase) if self.ids else None


@dataclass(frozen=True)
class RetireBlue:
    """Green has served through the bake: blue goes to capacity 0 (its model stays, so it comes back in minutes),
    or is deleted (``--delete-blue``: the rollout ends there, nothing of blue left to look at). Intent first."""

    batch: Batch
    delete: bool

    def apply(self, host: Host, phase: Phase) -> str | None:
        host.update_batch(self.batch, meta={**self.batch.meta, BLUE_DOWN: host.now(), "blue_deleted": self.delete})
        if self.delete:
            host.arm(host.api.delete_set)
            host.update_batch(self.batch, state="succeeded", finished=host.now())
            host.emit("blue_deleted", green=self.batch.meta[GREEN])
            return "done"
        host.arm(lambda: host.api.set_capacity(0))
        host.emit("blue_scaled_down", green=self.batch.meta[GREEN])
        return None


@dataclass(frozen=True)
class Switched:
    """Blue has no VMs left: the batch (green) succeeded, and so did the phase."""

    batch: Batch

    def apply(self, host: Host, phase: Phase) -> str | None:
        host.update_batch(self.batch, state="succeeded", finished=host.now())
        host.emit("switched", green=self.batch.meta[GREEN])
        return "done"


@dataclass(frozen=True)
class BeginUndo:
    """Green failed, or a rollback was asked: record why and when undoing began (a rollback records its own batch,
    with what the forward one did), then the next turns undo step by step."""

    batch: Batch
    reason: str
    kind: str = "forward"

    def apply(self, host: Host, phase: Phase) -> str | None:
        meta = {**self.batch.meta, UNDO: self.reason, UNDO_AT: host.now()}
        if self.kind == "forward":
            host.update_batch(self.batch, meta=meta)
        else:
            host.record_batch(self.kind, [], meta)
        host.emit("green_undoing", green=self.batch.meta[GREEN], reason=self.reason)
        return None


@dataclass(frozen=True)
class RestoreBlue:
    """Blue was scaled to 0: back to its capacity (on its own model, the old image). Intent first."""

    batch: Batch
    capacity: int

    def apply(self, host: Host, phase: Phase) -> str | None:
        Mark(self.batch, BLUE_RESTORING, "blue_restoring", {"capacity": self.capacity}).apply(host, phase)
        host.arm(lambda: host.api.set_capacity(self.capacity))
        return None


@dataclass(frozen=True)
class DrainGreen:
    """Blue serves again: green's VMs Down in the load balancers (its requests in flight finish), intent first."""

    batch: Batch
    ids: tuple[str, ...]
    gateway: bool = False

    def apply(self, host: Host, phase: Phase) -> str | None:
        Mark(self.batch, GREEN_DRAINED, "green_draining", {"drained": len(self.ids)}).apply(host, phase)
        way = "appgw" if self.gateway else "lb"
        return take_out(self.ids, way, str(self.batch.meta[GREEN])).apply(host, phase) if self.ids else None


@dataclass(frozen=True)
class DeleteGreen:
    """Delete the green set (blue serves), intent first; the phase ends with ``outcome``."""

    batch: Batch
    outcome: str

    def apply(self, host: Host, phase: Phase) -> str | None:
        name = str(self.batch.meta[GREEN])
        host.update_batch(self.batch, state="failed" if self.batch.kind == "forward" else "succeeded",
                          finished=host.now(), meta={**self.batch.meta, GREEN_DELETING: host.now()})
        with contextlib.suppress(NotFound):
            host.arm(lambda: host.api.for_set(name).delete_set())
        host.emit("green_deleted", name=name, reason=str(self.batch.meta[UNDO]))
        return self.outcome


# ------------------------------------------------------------------------------------ the strategy
class BlueGreen(Common):
    name = NAME
    changes_model = False  # blue's model is left as it is: green gets the image

    def elsewhere(self, batch: Batch) -> str | None:
        """Green's VMs are what the batch is judged on, until it is being undone."""
        return str(batch.meta[GREEN]) if GREEN in batch.meta and UNDO not in batch.meta else None

    def judged(self, batch: Batch, instances: tuple[Instance, ...] | list[Instance]) -> list[str] | None:
        if GREEN not in batch.meta or UNDO in batch.meta:
            return None
        return [i.instance_id for i in instances]

    def watched(self, batch: Batch, instances: tuple[Instance, ...] | list[Instance]) -> list[str]:
        return []  # (green's operations are its own set's: its VMs are judged, not waited on)

    def observe(self, api: Gateway, phase: Phase, policy: RolloutPolicy, sight: Sight) -> Mapping[str, object]:
        """Green's instances (None: not there), whose tag it carries, and what the load balancers say of blue's
        and green's VMs when the policy drains."""
        batch = _green(phase) or _green(Phase("forward", phase.forward))
        if batch is None:
            return {}
        other = api.for_set(str(batch.meta[GREEN]))
        try:
            model = other.get()
        except NotFound:
            model = None
        seen: dict[str, object] = {"green": None} if model is None else {
            "green": list(sight.elsewhere) if sight.elsewhere is not None else other.instances(),
            "tag": model.tags.get(ROLLOUT_TAG), "rollout": (sight.model or api.get()).tags.get(ROLLOUT_TAG)}
        blue_reads, green_reads = _reads(batch, sight.settled, policy.green_weight is not None)
        if policy.drain not in ("lb", "appgw") or (blue_reads is None and green_reads is None):
            return seen
        network = api.network()
        if network is None:
            seen["lb"] = None
            return seen
        blue = sight.model or api.get()
        if blue_reads is not None:
            seen["lb_blue"] = by_instance(network.backends(blue, health=blue_reads))[0] if blue.fronted else {}
        if green_reads is not None and model is not None:
            seen["lb_green"] = by_instance(network.backends(model, health=green_reads))[0] if model.fronted else {}
        return seen

    def remaining(self, obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs) -> Plan:
        behind = [i.instance_id for i in obs.instances if needs(i)]
        return Plan([behind] if behind and not phase.batches else [], len(obs.instances), 0, len(obs.instances), [])

    def next(self, obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs, plan: Plan) -> Action:
        if phase.kind != "forward":
            return _rollback(obs, phase, policy)
        batch = _green(phase)
        if batch is None:
            live = [i for i in obs.instances if i.provisioning != "deleting"]
            if not live:
                return Finish("done")
            return CreateGreen(policy.green_capacity or len(live), len(live))
        if UNDO in batch.meta:
            return _undo(obs, batch, policy, str(batch.meta[UNDO]))
        name, capacity = str(batch.meta[GREEN]), int(batch.meta[GREEN_CAPACITY])
        vms = obs.seen.get("green")
        if not isinstance(vms, list):  # not there: the create never landed (If-None-Match keeps it to one)
            if BLUE_DRAINED in batch.meta:
                return BeginUndo(batch, f"the green scale set {name} is gone")
            return CreateGreen(capacity, int(batch.meta[BLUE_CAPACITY]), name)
        if obs.seen.get("tag") != obs.seen.get("rollout"):
            return Finish(f"a scale set named {name} exists and is not this rollout's; nothing was changed")
        if obs.seen.get("lb", {}) is None:
            return Finish("the load balancers in front of the set cannot be reached to move its traffic")
        if obs.bad:
            when = "after the switch" if BLUE_DRAINED in batch.meta else "before the switch"
            return BeginUndo(batch, f"green failed {when}: {'; '.join(describe(obs.bad))}")
        if READY not in batch.meta:
            return _warm_up(obs, phase, policy, batch, vms, capacity)
        lb_blue = _lb(obs, "lb_blue")
        serving_blue = still_in(lb_blue, sorted(lb_blue, key=id_key), _way(policy))
        if BLUE_DRAINED not in batch.meta:
            return DrainBlue(batch, serving_blue, _way(policy) == "appgw")
        if BLUE_DOWN not in batch.meta:
            if serving_blue:  # (a crash between the record and the write, or a VM blue got meanwhile)
                return take_out(serving_blue, _way(policy))
            ends = float(batch.meta[BLUE_DRAINED]) + max(policy.drain_timeout, policy.bake)
            if obs.now < ends:  # green serves alone; blue kept drained, ready to take the traffic back
                return Wait(min(ends - obs.now, max(policy.poll, BAKE_POLL)), "baking: blue drained, ready for a "
                            "rollback", announce=True)
            return RetireBlue(batch, policy.delete_blue)
        return Wait(policy.poll, "blue scaling down") if obs.instances else Switched(batch)


def _warm_up(obs: Observation, phase: Phase, policy: RolloutPolicy, batch: Batch, vms: list,
             capacity: int) -> Action:
    """Green coming up: every VM healthy and past the gates (the engine's verdicts), then Up in every load
    balancer rule (it gets traffic from then on); within the health timeout. With ``--green-weight``, only that
    many green VMs are admitted (the others held Down by admin state from the moment they are in the pool), for
    ``--pause`` with the gates judging them, before all are."""
    late = obs.elapsed > policy.health_timeout
    lb_green = _lb(obs, "lb_green")
    ids = sorted((i.instance_id for i in vms), key=id_key)
    admitted = set(ids[:max(1, policy.green_weight.of(capacity))]) if policy.green_weight else set(ids)
    if WEIGHTED not in batch.meta:
        held = tuple(i for i in ids if i not in admitted and i in lb_green and lb_green[i]["drains"]
                     and lb_green[i]["admin"] != "Down")
        if held:  # (before they can be Up: a VM boots for minutes, a turn is seconds)
            return SetAdmin(held, "Down", on=str(batch.meta[GREEN]))
    if len(vms) < capacity or not vms or any(obs.verdicts.get(i.instance_id) is None or
                                              obs.verdicts[i.instance_id].state != GOOD for i in vms):
        if late:
            return BeginUndo(batch, f"green not healthy after {policy.health_timeout:.0f}s")
        return Wait(poll_delay(obs, phase, policy), "green coming up")
    if policy.green_weight and WEIGHTED not in batch.meta:
        not_up = [i for i in ids if i in admitted and i in lb_green and not lb_green[i]["up"]]
        if not not_up:
            return Mark(batch, WEIGHTED, "green_weighted", {"admitted": len(admitted), "of": len(ids)})
    elif policy.green_weight:
        ends = float(batch.meta[WEIGHTED]) + max(policy.pause, policy.poll)
        if obs.now < ends:  # its share of the traffic, judged by the gates meanwhile
            return Wait(min(ends - obs.now, max(policy.poll, BAKE_POLL)), f"green taking {len(admitted)} of "
                        f"{len(ids)} shares", announce=True)
        held = tuple(i for i in ids if i in lb_green and lb_green[i]["admin"] == "Down")
        if held:
            return SetAdmin(held, "None", on=str(batch.meta[GREEN]))
    not_up = [i for i in ids if i in lb_green and not lb_green[i]["up"]]
    if not_up:
        if late:
            return BeginUndo(batch, f"green instance(s) {', '.join(not_up)} never Up in the load balancers within "
                                    f"{policy.health_timeout:.0f}s")
        return Wait(min(policy.poll, UP_POLL), "the load balancers to see green Up")
    return Mark(batch, READY, "green_ready", {"instances": len(vms)})


def _undo(obs: Observation, batch: Batch, policy: RolloutPolicy, reason: str, outcome: str | None = None) -> Action:
    """Back to blue, step by step: blue at its capacity again (when it was scaled to 0), readmitted, seen serving;
    then green drained and deleted. ``outcome``: how the phase ends (None: with ``reason``, a failure)."""
    cap = int(batch.meta[BLUE_CAPACITY])
    if batch.meta.get("blue_deleted"):
        return Finish(f"{reason}; the old set was deleted after the bake: roll back with a new rollout of "
                      f"{batch.meta[GREEN]}")
    live = [i for i in obs.instances if i.provisioning != "deleting"]
    if BLUE_DOWN in batch.meta and len(live) < cap and BLUE_RESTORING not in batch.meta:
        return RestoreBlue(batch, cap)
    lb_blue, lb_green = _lb(obs, "lb_blue"), _lb(obs, "lb_green")
    down = held_out(lb_blue, sorted((i.instance_id for i in live), key=id_key), _way(policy))
    if down:  # (not the ones being deleted: readmitted, they would be sent requests as they go)
        return put_back(down, _way(policy))
    waiting = [i.instance_id for i in live if not i.healthy or (i.instance_id in lb_blue and
                                                                not lb_blue[i.instance_id]["up"])]
    if waiting or (BLUE_RESTORING in batch.meta and len(live) < cap):
        since = float(batch.meta.get(BLUE_RESTORING) or batch.meta[UNDO_AT])
        if obs.now - since > policy.health_timeout:
            return Finish(f"{reason}; the old set did not serve again within {policy.health_timeout:.0f}s "
                          f"(instance(s) {', '.join(waiting) or 'missing'}): both sets left as they are")
        return Wait(min(policy.poll, UP_POLL), "the old set to serve again")
    vms = obs.seen.get("green")
    if isinstance(vms, list) and GREEN_DELETING not in batch.meta:
        if GREEN_DRAINED not in batch.meta:
            return DrainGreen(batch, still_in(lb_green, sorted(lb_green, key=id_key), _way(policy)),
                              _way(policy) == "appgw")
        ends = float(batch.meta[GREEN_DRAINED]) + (policy.drain_timeout if lb_green else 0.0)
        if obs.now < ends:
            return Wait(ends - obs.now, "draining green")
        return DeleteGreen(batch, outcome or reason)
    return Finish(outcome or reason)


def _rollback(obs: Observation, phase: Phase, policy: RolloutPolicy) -> Action:
    """A rollback: nothing created, nothing to undo; else the forward batch's steps undone (recorded in a rollback
    batch of its own)."""
    forward = _green(Phase("forward", phase.forward))
    if forward is None:
        return Finish("done")
    mine = _green(phase)
    if mine is None:
        return BeginUndo(forward, "rollback requested", kind="rollback")
    return _undo(obs, mine, policy, str(mine.meta[UNDO]), outcome="done")


def _reads(batch: Batch, settled: bool, weighted: bool) -> tuple[bool | None, bool | None]:
    """What the next decision needs of the load balancers, for blue and for green: None, nothing; False, admin
    states (one GET); True, Up-ness too (the rules' health, an LRO each). Green's Up-ness once its VMs are judged
    (``settled``) and before it is ready;
    blue's admin states at the switch and through the bake; blue's Up-ness and green's admin states when undoing;
    nothing while blue scales down."""
    meta = batch.meta
    if UNDO in meta:
        return True, False
    if READY not in meta:  # (with --green-weight, green's admin states all along: it holds some VMs Down)
        return None, True if settled else (False if weighted else None)
    return (None, None) if BLUE_DOWN in meta else (False, None)


def _way(policy: RolloutPolicy) -> str:
    """How blue and green leave and rejoin rotation: out of the gateways' pools, or by admin state."""
    return "appgw" if policy.drain == "appgw" else "lb"


def _green(phase: Phase) -> Batch | None:
    return next((b for b in phase.batches if GREEN in b.meta), None)


def _lb(obs: Observation, key: str) -> dict:
    seen = obs.seen.get(key)
    return seen if isinstance(seen, dict) else {}


register(BlueGreen())
