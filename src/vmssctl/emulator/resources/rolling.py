"""Azure's own rolling upgrades (osRollingUpgrade), as a part of the simulated world.

Batches of maxBatchInstancePercent, checked against maxUnhealthyInstancePercent before and
maxUnhealthyUpgradedInstancePercent after each, with pauseTimeBetweenBatches between them:
the baseline a vmssctl rollout is compared with. A resource of the world: it drives
the VMs and operations of the other resource types through it.

With ``maxSurge: true`` a batch does not upgrade VMs in place: it creates as many new VMs (new
instance ids, latest model), waits until they are healthy, then deletes the old ones it replaces,
as Compute's MaxSurge rolling upgrade does; ``sku.capacity`` stays as it was. When the new VMs of a
batch break maxUnhealthyUpgradedInstancePercent the upgrade faults and this emulator deletes that
batch's new VMs (the old ones stay), so the set is back at its capacity.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vmssctl.emulator import images, timing
from vmssctl.emulator.errors import ArmError, conflict
from vmssctl.emulator.resources import availability

if TYPE_CHECKING:
    from vmssctl.emulator.resources.operations import Operation
    from vmssctl.emulator.resources.scalesets import ScaleSet
    from vmssctl.emulator.resources.vms import Instance
    from vmssctl.emulator.world import World

# What Compute fills in and returns when a set is Rolling without these settings (real PUT/GET responses)
ROLLING_POLICY_DEFAULTS = {
    "maxBatchInstancePercent": 20,
    "maxUnhealthyInstancePercent": 20,
    "maxUnhealthyUpgradedInstancePercent": 20,
    "pauseTimeBetweenBatches": "PT0S",
}
ROLLING_DEFAULTS = {**ROLLING_POLICY_DEFAULTS, "prioritizeUnhealthyInstances": False, "maxSurge": False}


@dataclass
class RollingUpgrade:
    id: str
    policy: dict
    start: float
    code: str = "RollingForward"
    last_action: str = "Start"
    last_action_time: float = 0.0
    todo: list = field(default_factory=list)
    batch: list = field(default_factory=list)
    replacing: list = field(default_factory=list)  # maxSurge: the old VMs this batch's new ones replace
    os_image: bool = False  # started by osRollingUpgrade: 'latest' models move to the newest published version
    upgraded: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    phase: str = "next"
    next_at: float = 0.0
    error: dict | None = None
    op_id: str | None = None
    end: float | None = None


class RollingUpgrades:
    """osRollingUpgrade, rollingUpgrades/latest and /cancel on the world's scale sets (the upgrade in progress
    or last run is the set's ``rolling``)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def start(self, rg: str, name: str) -> Operation:
        w = self.world
        ss = w.scale_sets.get(rg, name)
        now = w.advance()
        if ss.rolling and ss.rolling.code == "RollingForward":
            raise conflict(f"A rolling upgrade is already in progress on scale set '{name}'.",
                           "RollingUpgradeInProgress")
        if images.kind_of(ss.vm_profile["storageProfile"]) == images.URI:
            raise conflict("OS rolling upgrade is not supported for scale sets built from unmanaged VHD images.")
        busy = [i.instance_id for i in ss.live() if i.op is not None]
        if busy:
            raise conflict(f"Operation 'osRollingUpgrade' is not allowed: instance(s) {busy[:10]} have an "
                           "operation in progress.")
        op = w.operations.new("OSRollingUpgrade", ss.location, now)
        op.set_key = list(ss.key)
        self.begin(ss, now, op, os_image=True)
        return op

    def _behind(self, ss: ScaleSet, inst: Instance, os_image: bool) -> bool:
        """Does the rolling upgrade still have work on ``inst``? Not on the latest model; or, for an OS image
        upgrade (osRollingUpgrade) of a model that says 'latest', not on the newest published version."""
        if inst.profile != ss.profile_digest:
            return True
        storage = ss.vm_profile["storageProfile"]
        ref = storage.get("imageReference") or {}
        if not os_image or images.kind_of(storage) != images.PLATFORM or str(ref.get("version")).lower() != "latest":
            return False
        return bool((inst.image.get("imageReference") or {}).get("exactVersion") != self.world.catalog.resolve(ref))

    def begin(self, ss: ScaleSet, now: float, op: Operation | None, os_image: bool = False) -> None:
        """Start a rolling upgrade of the instances behind (the model changed, or osRollingUpgrade)."""
        w = self.world
        policy = {**ROLLING_DEFAULTS, **(ss.model["properties"]["upgradePolicy"].get("rollingUpgradePolicy") or {})}
        todo = [i for i in ss.live() if self._behind(ss, i, os_image) and not i.protected("actions")]
        order = (lambda i: (availability.healthy(ss, i), i.instance_id)) if policy["prioritizeUnhealthyInstances"] \
            else (lambda i: i.instance_id)
        ru = RollingUpgrade(id=str(uuid.UUID(int=w.rng.getrandbits(128))), policy=policy, start=now,
                            last_action_time=now, todo=[i.instance_id for i in sorted(todo, key=order)],
                            next_at=now, op_id=op.id if op else None, os_image=os_image)
        ss.rolling = ru
        w.changes += 1
        self._step(ss, now)

    def _end(self, ss: ScaleSet, t: float, code: str, error: dict | None = None) -> None:
        ru = ss.rolling
        assert ru is not None
        ru.code, ru.error, ru.end, ru.phase = code, error, t, "done"
        op = self.world.ops.get(ru.op_id) if ru.op_id else None
        if op and op.status == "InProgress":
            self.world.touched_ops.add(op.id)
            op.end = t
            op.status = {"Completed": "Succeeded", "Cancelled": "Canceled"}.get(code, "Failed")
            op.error = error
        self.world.changes += 1

    def due(self, set_key: object, t: float) -> None:
        """The heap says a set's rolling upgrade may take its next step."""
        ss = self.world.sets.get(set_key)  # type: ignore[call-overload]
        if ss and ss.rolling and ss.rolling.code == "RollingForward" and ss.rolling.next_at <= t:
            self._step(ss, t)

    def _step(self, ss: ScaleSet, t: float) -> None:
        w = self.world
        ru = ss.rolling
        assert ru is not None
        pol = ru.policy
        cap = max(1, len(ss.live()))
        if ru.phase == "batch":
            batch = [ss.instances[i] for i in ru.batch if i in ss.instances]
            settled = all(i.op is None and i.health != "initializing" for i in batch)
            if not settled:
                ru.next_at = t + timing.ROLLING_POLL
                w.wake(ru.next_at, "ru", ss.key)
                return
            ru.upgraded += [i.instance_id for i in batch]
            ru.failed += [i.instance_id for i in batch if not availability.healthy(ss, i)]
            ru.batch = []
            limit = pol["maxUnhealthyUpgradedInstancePercent"]
            if ru.failed and len(ru.failed) * 100 > limit * len(ru.upgraded):
                if ru.replacing:  # the surge's new VMs go; the old ones they were to replace stay
                    for inst in batch:
                        w.vms.begin(ss, inst, "delete", t, None, force=True)
                    ru.replacing = []
                self._end(ss, t, "Faulted", {
                    "code": "MaxUnhealthyUpgradedInstancePercentExceededInRollingUpgrade",
                    "message": f"{len(ru.failed)} of {len(ru.upgraded)} upgraded instances are unhealthy "
                               f"(instances {ru.failed[:10]}), more than the {limit}% allowed by "
                               "maxUnhealthyUpgradedInstancePercent."})
                return
            if ru.replacing:  # maxSurge: the new VMs are good; now the old ones go
                for iid in ru.replacing:
                    if iid in ss.instances and ss.instances[iid].op != "delete":
                        w.vms.begin(ss, ss.instances[iid], "delete", t, None, force=True)
                ru.phase = "retire"
                ru.next_at = t + timing.ROLLING_POLL
                w.wake(ru.next_at, "ru", ss.key)
                return
        if ru.phase == "retire":
            if any(i in ss.instances for i in ru.replacing):
                ru.next_at = t + timing.ROLLING_POLL
                w.wake(ru.next_at, "ru", ss.key)
                return
            ru.replacing = []
            ru.phase = "batch"  # falls through to the pause below
        if ru.phase == "batch":
            ru.phase = "pause"
            ru.next_at = t + timing.parse_iso_duration(pol["pauseTimeBetweenBatches"])
            if ru.next_at > t:
                w.wake(ru.next_at, "ru", ss.key)
                return
        # phase "next" or "pause" over: start the next batch
        ru.todo = [i for i in ru.todo if i in ss.instances and ss.instances[i].op != "delete"
                   and self._behind(ss, ss.instances[i], ru.os_image)]
        if not ru.todo:
            self._end(ss, t, "Completed")
            return
        unhealthy = cap - ss.healthy
        limit = pol["maxUnhealthyInstancePercent"]
        if unhealthy * 100 > limit * cap:
            self._end(ss, t, "Faulted", {
                "code": "MaxUnhealthyInstancePercentExceededInRollingUpgrade",
                "message": f"{unhealthy} of {cap} instances are unhealthy, more than the {limit}% allowed by "
                           "maxUnhealthyInstancePercent."})
            return
        size = max(1, cap * pol["maxBatchInstancePercent"] // 100)
        ready = [i for i in ru.todo if ss.instances[i].op is None]
        if pol.get("maxSurge"):
            ru.replacing = ready[:size]
            for iid in ru.replacing:
                ru.todo.remove(iid)
            ru.batch = [i.instance_id for i in w.scale_sets.add_instances(ss, len(ru.replacing), t, None)]
        else:
            ru.batch = ready[:size]
            for iid in ru.batch:
                ru.todo.remove(iid)
                w.vms.begin(ss, ss.instances[iid], "upgrade", t, None)
        ru.phase = "batch"
        ru.next_at = t + timing.ROLLING_POLL
        w.wake(ru.next_at, "ru", ss.key)

    def cancel(self, rg: str, name: str) -> Operation:
        w = self.world
        ss = w.scale_sets.get(rg, name)
        now = w.advance()
        if not ss.rolling or ss.rolling.code != "RollingForward":
            raise conflict(f"There is no rolling upgrade in progress on scale set '{name}' to cancel.")
        ss.rolling.last_action, ss.rolling.last_action_time = "Cancel", now
        self._end(ss, now, "Cancelled")
        op = w.operations.new("CancelRollingUpgrade", ss.location, now)
        w.operations.seal(op, now)
        return op

    def latest(self, rg: str, name: str) -> tuple[ScaleSet, RollingUpgrade]:
        ss = self.world.scale_sets.get(rg, name)
        self.world.advance()
        if ss.rolling is None:
            raise ArmError(404, "NotFound", f"No rolling upgrade has ever run on scale set '{name}'.")
        return ss, ss.rolling

