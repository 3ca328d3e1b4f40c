"""A scale set's virtual machines: their state, the operations on them (upgrade, reimage, restart, power,
delete), and the timed steps each operation takes, with the faults a test injected."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from vmssctl.emulator import timing
from vmssctl.emulator.errors import conflict, invalid, not_found
from vmssctl.emulator.resources import availability
from vmssctl.emulator.resources.fields import SetKey, check_etag

if TYPE_CHECKING:
    from vmssctl.emulator.resources.operations import Operation
    from vmssctl.emulator.resources.scalesets import ScaleSet
    from vmssctl.emulator.world import World

# the actions of the REST API (set-wide or on instances) and the operation each one runs on a VM
ACTIONS = {
    "manualupgrade": "upgrade", "reimage": "reimage", "reimageall": "reimage", "restart": "restart",
    "start": "start", "poweroff": "poweroff", "deallocate": "deallocate", "delete": "delete",
    "redeploy": "redeploy", "performmaintenance": "redeploy",
}


@dataclass
class Instance:
    instance_id: int
    ud: int
    fd: int
    zone: str | None
    vm_id: str
    image: dict  # the storage-profile fragment this VM runs, with exactVersion resolved
    profile: str  # digest of the model it was built from; equal to the set's = latest model
    created: float
    changed: float
    power: str = "starting"
    provisioning: str = "Creating"
    health: str | None = None
    error: dict | None = None
    op: str | None = None  # kind of operation in flight
    op_id: str | None = None
    steps: list = field(default_factory=list)  # [[t, action], ...] still to happen
    pending: dict | None = None  # what the in-flight operation will leave behind
    etag: int = 1  # bumped by every change to the VM: listings and saves encode again only what moved it
    upgrades: int = 0  # OS disk replacements (upgrade/reimage), to prove nothing was upgraded twice
    protection: dict = field(default_factory=dict)  # protectionPolicy: protectFromScaleIn, protectFromScaleSetActions
    # its own networkInterfaceConfigurations (networkProfileConfiguration), when set on the VM: which backend pools
    # it is in; None: the model's (an upgrade to the latest model puts the model's back)
    nics: list | None = None
    nics_at: float | None = None  # when its network configuration last changed: pools it joined have not probed it
    name: str | None = None  # a Flexible set's VM: its name (Microsoft.Compute/virtualMachines/{name}) is its id
    # when it last started / stopped serving (what a load balancer's probe sees, with its lag: network.probes)
    healthy_at: float | None = None
    unhealthy_at: float | None = None
    prev_healthy_at: float | None = None

    @property
    def external_id(self) -> str:
        """How ARM names the VM in instanceIds: the number in a Uniform set, the VM name in a Flexible one."""
        return self.name or str(self.instance_id)

    def protected(self, from_what: str) -> bool:
        """``scale-in``: kept at scale-in (either flag); ``actions``: left out of set-wide operations."""
        if from_what == "scale-in":
            return bool(self.protection.get("protectFromScaleIn") or self.protection.get("protectFromScaleSetActions"))
        return bool(self.protection.get("protectFromScaleSetActions"))


class Vms:
    """The VMs of every scale set (they live in their set's ``instances``)."""

    def __init__(self, world: World) -> None:
        self.world = world

    # ----------------------------------------------------------------- reads
    def named(self, ss: ScaleSet, ids: Iterable[str] | None) -> list[Instance]:
        """The live VMs ``ids`` names (all, by id, when None); an id that is not one refuses them all."""
        if ids is None:
            return sorted(ss.live(), key=lambda i: i.instance_id)
        out: list[Instance] = []
        for raw in ids:
            inst = ss.lookup(raw)
            if inst is None or inst.op == "delete":
                raise invalid(f"The provided instanceId {raw} is not an active Virtual Machine Scale Set VM "
                              "instanceId.", "instanceIds")
            if inst not in out:
                out.append(inst)
        return out

    def get(self, rg: str, name: str, iid: str) -> tuple[ScaleSet, Instance]:
        ss = self.world.scale_sets.get(rg, name)
        self.world.advance()
        inst = ss.lookup(iid)
        if inst is None:
            raise not_found("Microsoft.Compute/virtualMachineScaleSets/virtualMachines", f"{name}/{iid}", rg)
        return ss, inst

    def flexible(self, rg: str, set_id: str | None = None) -> list[tuple[ScaleSet, Instance]]:
        """The virtual machines of the Flexible sets in ``rg`` (of one set, by its resource id), oldest first."""
        self.world.resource_groups.get(rg)
        self.world.advance()
        out = []
        for ss in self.world.scale_sets.select(rg):
            if ss.flexible and (set_id is None or set_id.lower().endswith(
                    f"/resourcegroups/{ss.rg}/providers/microsoft.compute/virtualmachinescalesets/{ss.name}".lower())):
                out += [(ss, i) for i in sorted(ss.instances.values(), key=lambda i: i.instance_id)]
        return out

    def find(self, rg: str, vm_name: str) -> tuple[ScaleSet, Instance]:
        """A Flexible set's VM by its name (404 as for any virtual machine that does not exist)."""
        for ss, inst in self.flexible(rg):
            if (inst.name or "").lower() == vm_name.lower():
                return ss, inst
        raise not_found("Microsoft.Compute/virtualMachines", vm_name, rg)

    # ---------------------------------------------------------------- writes
    def update(self, rg: str, name: str, iid: str, body: object, if_match: str | None,
               if_none_match: str | None) -> tuple[ScaleSet, Instance, Operation]:
        """PUT on one VM: the emulator keeps no per-VM model, so it checks preconditions and echoes it."""
        w = self.world
        ss, inst = self.get(rg, name, iid)
        check_etag(inst.etag, if_match, if_none_match)
        if not isinstance(body, dict):
            raise invalid("The request body must be a JSON object.")
        props = body.get("properties") or {}
        policy = props.get("protectionPolicy") if isinstance(props, dict) else None
        if policy is not None:
            keys = ("protectFromScaleIn", "protectFromScaleSetActions")
            if not isinstance(policy, dict) or set(policy) - set(keys) or \
                    not all(isinstance(v, bool) for v in policy.values()):
                raise invalid("protectionPolicy takes protectFromScaleIn and protectFromScaleSetActions, true or "
                              "false.", "properties.protectionPolicy")
            inst.protection = {k: v for k, v in policy.items() if v}
            inst.etag += 1
            w.changes += 1
        network = props.get("networkProfileConfiguration") if isinstance(props, dict) else None
        if network is not None and not ss.flexible:
            inst.nics, inst.nics_at = _check_nics(network), w.now()
            inst.etag += 1
            w.changes += 1
        now = w.now()
        op = w.operations.new("UpdateScaleSetVM", ss.location, now)
        w.operations.seal(op, now)
        return ss, inst, op

    def act(self, rg: str, name: str, action: str, ids: list[str] | None) -> Operation:
        """A set- or instance-level action; validates every instance before touching any."""
        w = self.world
        ss = w.scale_sets.get(rg, name)
        now = w.advance()
        kind = ACTIONS[action]
        if ss.provisioning == "Deleting":
            raise conflict(f"The scale set '{name}' is being deleted.")
        targets = self.named(ss, ids)
        if kind != "delete":  # set-wide operations pass over VMs protected from scale set actions
            targets = [i for i in targets if not i.protected("actions")]
        if kind != "delete" and ss.rolling and ss.rolling.code == "RollingForward":
            raise conflict(f"Operation '{action}' is not allowed on scale set '{name}' while a rolling upgrade "
                           "is in progress. Cancel it first or wait until it completes.")
        if kind != "delete":
            blocked = [i for i in targets if i.op is not None]
            if blocked:
                raise conflict(f"Operation '{action}' is not allowed on instance(s) "
                               f"{', '.join(i.external_id for i in blocked)}: operation '{blocked[0].op}' "
                               "is in progress on them.")
        op = w.operations.new(action, ss.location, now, ss if kind == "delete" else None,
                              then="ready" if kind == "delete" else None)
        op.set_key = list(ss.key)
        for inst in targets:
            if kind == "upgrade" and inst.profile == ss.profile_digest:
                continue  # already on the latest model: Compute leaves it alone
            if kind == "start" and inst.power in ("running", "starting"):
                continue
            if kind in ("poweroff", "deallocate") and inst.power in ("deallocated",) + (
                    ("stopped",) if kind == "poweroff" else ()):
                continue
            self.begin(ss, inst, kind, now, op, force=kind == "delete")
        if kind == "delete":
            ss.model["sku"]["capacity"] = len(ss.live())
            ss.etag += 1
        w.operations.seal(op, now)
        w.changes += 1
        return op

    # ------------------------------------------------------------ simulation
    def begin(self, ss: ScaleSet, inst: Instance, kind: str, now: float, op: Operation | None,
              force: bool = False, resolved: dict | None = None) -> None:
        """Start ``kind`` on an instance: set its immediate state and schedule the rest. ``resolved``: what the
        set's model resolves to now, when the caller resolved it once for many VMs."""
        w = self.world
        if inst.op is not None and not force:
            raise conflict(f"Operation '{inst.op}' is in progress on instance {inst.external_id}.")
        if inst.op_id and inst.op_id in w.ops:  # superseded (a delete wins): release the old op
            self._done(ss, inst, now, None)
        image, profile = inst.image, inst.profile
        if kind in ("upgrade", "reimage"):
            inst.upgrades += 1
        if kind == "upgrade" and inst.nics is not None:
            inst.nics, inst.nics_at = None, now  # the latest model, its network configuration included
        if kind in ("upgrade", "create"):
            image, profile = resolved or w.scale_sets.resolve_image(ss.vm_profile["storageProfile"], ss.location), \
                ss.profile_digest
        elif kind == "reimage" and inst.profile == ss.profile_digest:
            # a reimage of an up-to-date VM whose model says 'latest' takes the newest published version
            image = w.scale_sets.resolve_image(ss.vm_profile["storageProfile"], ss.location)
        effect, code, factor = w.faults.outcome(_facts(ss, inst, image))
        boots = any("booted" in actions for _, actions in timing.SCRIPTS[kind][2])
        inst.pending = {"image": image, "profile": profile,
                        "effect": effect if boots else None, "code": code}
        inst.op, inst.op_id = kind, (op.id if op else None)
        if op is not None:
            op.pending.append(inst.instance_id)
        t = now
        steps: list[list] = []
        before = availability.counts(ss, inst)
        inst.power, inst.provisioning, script = timing.SCRIPTS[kind]
        for duration, actions in script:
            t += w.jitter(duration, factor)
            steps += [[t, action] for action in actions]
        inst.health = None
        inst.error = None
        inst.steps = steps
        inst.changed = now
        inst.etag += 1
        self._changed(ss, inst, before, now)
        w.wake(steps[0][0], "inst", (ss.key, inst.instance_id))

    def due(self, where: object, t: float) -> None:
        """The heap says a VM has a step due: ``where`` is (set key, instance id)."""
        set_key, iid = cast("tuple[SetKey, int]", where)
        ss = self.world.sets.get(set_key)
        inst = ss.instances.get(iid) if ss else None
        if ss is not None and inst is not None:
            self._run_steps(ss, inst, t)

    def _run_steps(self, ss: ScaleSet, inst: Instance, t: float) -> None:
        while inst.steps and inst.steps[0][0] <= t:
            at, action = inst.steps.pop(0)
            before = availability.counts(ss, inst)
            grace = ss.health_grace()
            pending = inst.pending or {}
            if action == "stopped":
                inst.power, inst.health = "stopped", None
            elif action == "deallocating":
                inst.power, inst.health = "deallocating", None
            elif action == "deallocated":
                inst.power = "deallocated"
            elif action == "starting":
                inst.power = "starting"
            elif action == "apply":
                inst.image, inst.profile = pending.get("image", inst.image), pending.get("profile", inst.profile)
            elif action == "booted":
                inst.power = "running"
                if pending.get("effect") == "fail":
                    inst.provisioning = "Failed"
                    inst.error = {"code": pending["code"], "message": (
                        f"OS Provisioning for VM '{inst.name or f'{ss.name}_{inst.instance_id}'}' did not finish in "
                        "the allotted "
                        "time. The VM may still finish provisioning successfully. Please check provisioning "
                        "state later.")}
                    inst.health = "unhealthy" if grace is not None else None
                    self._done(ss, inst, at, inst.error)
                else:
                    inst.provisioning = "Succeeded"
                    if grace is not None:
                        inst.health = "initializing"
                        inst.steps.append([at + grace, "health"])
                    self._done(ss, inst, at, None)
            elif action == "health":
                if inst.power == "running":
                    inst.health = "unhealthy" if pending.get("effect") == "unhealthy" else "healthy"
            elif action == "done":
                inst.provisioning = "Succeeded"
                self._done(ss, inst, at, None)
            elif action == "gone":
                inst.power, inst.health = "deallocated", None
                self._done(ss, inst, at, None)
                del ss.instances[inst.instance_id]
            inst.changed = at
            inst.etag += 1
            self._changed(ss, inst, before, at)
            if action == "gone":
                return
        if inst.steps:
            self.world.wake(inst.steps[0][0], "inst", (ss.key, inst.instance_id))

    def _done(self, ss: ScaleSet, inst: Instance, t: float, error: dict | None) -> None:
        """A VM's part of its operation is over (``error``: how it failed); the operation ends with its last."""
        w = self.world
        op = w.ops.get(inst.op_id) if inst.op_id else None
        inst.op, inst.op_id = None, None
        if op is None:
            return
        w.touched_ops.add(op.id)  # (for the next save)
        if inst.instance_id in op.pending:
            op.pending.remove(inst.instance_id)
        if error:
            op.failures.append({"instanceId": inst.external_id, **error})
        if not op.pending and op.status == "InProgress" and op.end_at is None:
            w.operations.finish(op, t)

    def _changed(self, ss: ScaleSet, inst: Instance, before: tuple[bool, bool], t: float) -> None:
        availability.changed(ss, inst, before, t)
        self.world.changes += 1


def _facts(ss: ScaleSet, inst: Instance, image: dict) -> dict[str, str]:
    """What a fault rule can match on: the image a VM is moving to, its set and its id."""
    ref = image.get("imageReference") or {}
    return {
        "publisher": ref.get("publisher", ""), "offer": ref.get("offer", ""), "sku": ref.get("sku", ""),
        "version": ref.get("exactVersion") or ref.get("version", ""),
        "id": ref.get("id") or ref.get("sharedGalleryImageId") or ref.get("communityGalleryImageId") or "",
        "uri": ((image.get("osDisk") or {}).get("image") or {}).get("uri", ""),
        "scaleSet": ss.name, "instanceId": inst.external_id,
    }


def _check_nics(network: object) -> list:
    """A VM's own ``networkProfileConfiguration``: up to 8 network interface configurations, each named, with up to
    32 named IP configurations (what decides which backend pools the VM is in)."""
    nics = network.get("networkInterfaceConfigurations") if isinstance(network, dict) else None
    if not isinstance(nics, list) or not 0 < len(nics) <= 8:
        raise invalid("networkProfileConfiguration.networkInterfaceConfigurations must be a list of 1 to 8.",
                      "properties.networkProfileConfiguration")
    for nic in nics:
        ipcs = (nic.get("properties") or {}).get("ipConfigurations") if isinstance(nic, dict) else None
        if not isinstance(nic, dict) or not isinstance(nic.get("name"), str) or not isinstance(ipcs, list) or \
                not 0 < len(ipcs) <= 32 or not all(isinstance(i, dict) and isinstance(i.get("name"), str)
                                                  for i in ipcs):
            raise invalid("Every network interface configuration needs a name and 1 to 32 named IP configurations.",
                          "properties.networkProfileConfiguration")
    return [dict(n) for n in nics]
