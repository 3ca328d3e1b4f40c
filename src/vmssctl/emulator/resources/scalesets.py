"""Scale sets: the model a client owns, its validation, and how a change of it moves the VMs (scale out and in,
Automatic upgrades, Azure's rolling upgrade)."""

from __future__ import annotations

import functools
import itertools
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vmssctl import inputs
from vmssctl.emulator import defaults, images, timing, validate
from vmssctl.emulator.errors import ArmError, conflict, invalid, not_found
from vmssctl.emulator.resources import availability, quota
from vmssctl.emulator.resources.fields import (
    SetKey,
    check_etag,
    check_location,
    digest,
    instance_number,
    key,
    merge,
    region,
    strip_read_only,
)
from vmssctl.emulator.resources.rolling import ROLLING_POLICY_DEFAULTS, RollingUpgrade
from vmssctl.emulator.resources.vms import Instance

if TYPE_CHECKING:
    from vmssctl.emulator.resources.operations import Operation
    from vmssctl.emulator.world import World

UPDATE_DOMAINS = 5
HEALTH_EXTENSION_TYPES = ("applicationhealthlinux", "applicationhealthwindows")


@dataclass
class ScaleSet:
    rg: str
    name: str
    location: str
    model: dict  # what the client owns: sku, tags, zones, properties (without read-only fields)
    unique_id: str
    created: float
    etag: int = 1
    provisioning: str = "Creating"
    next_instance_id: int = 0
    instances: dict[int, Instance] = field(default_factory=dict)
    busy: list = field(default_factory=list)  # op ids that keep provisioningState non-terminal
    rolling: RollingUpgrade | None = None
    availability: list = field(default_factory=list)  # [t, running, healthy, capacity]
    availability_from: int = 0  # the index of availability[0] in the set's whole record (older ones dropped)
    running: int = 0
    healthy: int = 0
    subscription: str = ""  # the subscription of its resource group ("" in states saved before there were several)

    @property
    def key(self) -> SetKey:
        return key(self.rg, self.name)

    @property
    def capacity(self) -> int:
        return int(self.model["sku"].get("capacity", 0))

    @property
    def vm_profile(self) -> dict:
        return self.model["properties"]["virtualMachineProfile"]

    def of_model(self, name: str, compute: Callable[[], Any]) -> Any:
        """A value derived from the model, kept beside the model it was made of (not a dataclass field: never
        persisted). A new model is a new dict, and only the capacity is ever changed in place, which none of
        these read: a listing asks them of every VM."""
        cached = self.__dict__.get(name)
        if cached is not None and cached[0] is self.model:
            return cached[1]
        value = compute()
        self.__dict__[name] = (self.model, value)
        return value

    @property
    def quota_class(self) -> tuple[str, str, int]:
        """What the set's vCPUs count against: its region, its size's family and vCPUs per VM (the quota check
        asks it of every set of the region on each grown one)."""
        return self.of_model("_quota", lambda: (region(self.location), *quota.size(
            str(self.model["sku"].get("name", "")))[::2]))

    @property
    def profile_digest(self) -> str:
        """The fingerprint of the model's VM profile and size (which VMs run the latest model)."""
        return self.of_model("_digest", lambda: digest([self.vm_profile, self.model["sku"].get("name")]))

    @property
    def fault_domains(self) -> int:
        return int(self.model["properties"].get("platformFaultDomainCount") or 5)

    @property
    def flexible(self) -> bool:
        """Flexible orchestration: the set's VMs are ordinary virtual machines, named, without update domains."""
        return self.of_model("_flexible", lambda: str(self.model["properties"].get(
            "orchestrationMode", "Uniform")).lower() == "flexible")

    def lookup(self, raw: object) -> Instance | None:
        """The VM an instanceId names: a number in a Uniform set, a VM name (any case) in a Flexible one."""
        if self.flexible:
            wanted = str(raw).lower()
            return next((i for i in self.instances.values() if (i.name or "").lower() == wanted), None)
        number = instance_number(raw)
        return self.instances.get(number) if number is not None else None

    @property
    def zones(self) -> list[str]:
        return list(self.model.get("zones") or [])

    def health_grace(self) -> float | None:
        """Grace period of the Application Health extension, or None when the model has none."""
        return self.of_model("_grace", self._health_grace)

    def _health_grace(self) -> float | None:
        for ext in (self.vm_profile.get("extensionProfile") or {}).get("extensions") or []:
            props = ext.get("properties") or {}
            if str(props.get("type", "")).lower() in HEALTH_EXTENSION_TYPES:
                grace = (props.get("settings") or {}).get("gracePeriod")
                return float(grace) if grace is not None else timing.HEALTH_GRACE
        return None

    def live(self) -> list[Instance]:
        return [i for i in self.instances.values() if i.op != "delete"]

    @property
    def upgrade_mode(self) -> str:
        return str(self.model["properties"]["upgradePolicy"].get("mode", "Manual")).lower()


@functools.lru_cache(maxsize=4096)
def _emptiest_cell(uds: int, cells: tuple[int, ...], fds: tuple[int, ...],
                   ud_n: tuple[int, ...]) -> tuple[int, int, int]:
    """Where a zone's next VM goes, from its counts per (FD, UD) cell, FD and UD: the emptiest cell, then the
    least-loaded FD and UD, along diagonals, as Compute spreads them. With max spreading (a Flexible set's
    platformFaultDomainCount 1) every VM reports fault domain 0. (Kept: every set grown from the same counts
    fills the same cells in the same order, so creating a fleet chooses each cell once.)"""
    *_, fd, ud, cell = min((cells[f * uds + u], fds[f] + ud_n[u], max(fds[f], ud_n[u]), f, (u - f) % uds, f, u,
                            f * uds + u) for f, u in itertools.product(range(len(fds)), range(uds)))
    return fd, ud, cell


class ScaleSets:
    """The world's scale sets (``world.sets``, by group and name)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def get(self, rg: str, name: str) -> ScaleSet:
        self.world.resource_groups.get(rg)
        ss = self.world.sets.get(key(rg, name))
        if ss is None:
            raise not_found("Microsoft.Compute/virtualMachineScaleSets", name, rg)
        return ss

    def select(self, rg: str | None = None, subscription: str | None = None) -> list[ScaleSet]:
        """The sets of a resource group, or of a subscription, or all."""
        sets = self.world.sets
        if rg is not None:
            self.world.resource_groups.get(rg)
            return [sets[k] for k in sets.of_group(rg)
                    if subscription is None or self.subscription_of(sets[k]).lower() == subscription.lower()]
        if subscription is None:
            return list(sets.values())
        return sets.of_subscription(subscription, self.world.subscription)

    def subscription_of(self, ss: ScaleSet) -> str:
        return ss.subscription or self.world.subscription

    def resolve_image(self, storage: dict, location: str | None = None) -> dict:
        """The storage-profile fragment a VM built now (in ``location``) would run; a platform version not
        published there is refused (a strict catalogue: ``images.Catalog``)."""
        kind = images.kind_of(storage)
        if kind == images.URI:
            return {"osDisk": {"image": {"uri": storage["osDisk"]["image"]["uri"]}}}
        ref = {k: v for k, v in storage["imageReference"].items() if v is not None}
        if kind == images.PLATFORM:
            ref["exactVersion"] = self.world.catalog.resolve(ref, location)
        else:
            self.world.galleries.check_available(ref, location)
        return {"imageReference": ref}

    def put(self, rg: str, name: str, body: dict, if_match: str | None = None,
            if_none_match: str | None = None) -> tuple[ScaleSet, Operation, bool]:
        """Create or replace; returns (scale set, its LRO, created?)."""
        w = self.world
        w.resource_groups.get(rg)
        now = w.advance()
        old = w.sets.get(key(rg, name))
        if old is not None and old.provisioning == "Deleting":
            raise conflict(f"The operation 'PutVMScaleSet' is not allowed on scale set '{name}' since it is being "
                           "deleted. Wait until the deletion completes.")
        check_etag(old.etag if old else None, if_match, if_none_match)
        validate.check_shape(body)
        if old is None:
            validate.check_scale_set_name(name)
        location = body.get("location") or (old.location if old else None)
        if not location:
            raise invalid("Required parameter 'location' is missing (null).", "location")
        check_location(location)
        model = strip_read_only({k: body[k] for k in ("sku", "tags", "zones", "properties", "identity", "plan")
                                 if body.get(k) is not None})
        assert isinstance(model, dict)
        model.setdefault("properties", {})
        if old is not None:
            _keep_image_identity(old, model)
        self._validate_model(model, old, str(location))
        sub = self.subscription_of(old) if old else w.resource_groups.subscription_of(w.resource_groups.get(rg))
        w.quotas.check(sub, str(location), model, old)
        defaults.apply(model)
        props = model["properties"]
        props.setdefault("upgradePolicy", {"mode": "Manual"})
        _fill_rolling_defaults(model)
        props.setdefault("orchestrationMode", "Uniform")
        props["orchestrationMode"] = "Flexible" if str(props["orchestrationMode"]).lower() == "flexible" else "Uniform"
        props.setdefault("platformFaultDomainCount", 5)
        props.setdefault("singlePlacementGroup", props["orchestrationMode"] == "Uniform")
        props.setdefault("overprovision", False)
        if old is None:
            grp = w.resource_groups.get(rg)
            ss = ScaleSet(rg=grp["name"], name=name, location=str(location), model=model,
                          unique_id=str(uuid.UUID(int=w.rng.getrandbits(128))), created=now,
                          subscription=w.resource_groups.subscription_of(grp))
            w.sets[ss.key] = ss
            availability.record(ss, now)
            op = w.operations.new("CreateScaleSet", str(location), now, ss, then="ready")
            self.scale_to(ss, ss.capacity, now, op)
            w.operations.seal(op, now)
            return ss, op, True
        return old, self._apply_model(old, model, now), False

    def patch(self, rg: str, name: str, body: dict, if_match: str | None = None) -> tuple[ScaleSet, Operation]:
        ss = self.get(rg, name)
        now = self.world.advance()
        if ss.provisioning == "Deleting":
            raise conflict(f"The operation 'PatchVMScaleSet' is not allowed on scale set '{name}' since it is being "
                           "deleted.")
        check_etag(ss.etag, if_match, None)
        validate.check_shape(body)
        patch = strip_read_only({k: body[k] for k in ("sku", "tags", "properties", "identity", "plan", "zones")
                                 if k in body})
        assert isinstance(patch, dict)
        model = merge(ss.model, patch)
        if "tags" in patch:
            model["tags"] = patch["tags"] or {}
        self._validate_model(model, ss, ss.location)
        self.world.quotas.check(self.subscription_of(ss), ss.location, model, ss)
        _fill_rolling_defaults(model)
        return ss, self._apply_model(ss, model, now)

    def _apply_model(self, ss: ScaleSet, model: dict, now: float) -> Operation:
        """A new model: scale to its capacity; a new VM profile starts Automatic or Rolling upgrades."""
        w = self.world
        old_digest, old_cap = ss.profile_digest, ss.capacity
        ss.model = model
        ss.etag += 1
        w.changes += 1
        op = w.operations.new("UpdateScaleSet", ss.location, now, ss, then="ready")
        if ss.capacity != old_cap:
            self.scale_to(ss, ss.capacity, now, op)
        if ss.profile_digest != old_digest:
            availability.recount(ss, now)
            behind = [i for i in ss.live()
                      if i.profile != ss.profile_digest and i.op is None and not i.protected("actions")]
            if ss.upgrade_mode == "automatic" and behind:
                for inst in behind:
                    w.vms.begin(ss, inst, "upgrade", now, None)
            elif ss.upgrade_mode == "rolling" and behind and not (ss.rolling and ss.rolling.code == "RollingForward"):
                w.rolling_upgrades.begin(ss, now, None)
        w.operations.seal(op, now)
        return op

    def delete(self, rg: str, name: str) -> Operation:
        ss = self.get(rg, name)
        return self.remove(ss, self.world.advance())

    def remove(self, ss: ScaleSet, now: float) -> Operation:
        """Delete a set: its rolling upgrade ends, every VM is deleted, then the set goes."""
        w = self.world
        op = w.operations.new("DeleteScaleSet", ss.location, now, ss, then="remove")
        if ss.rolling and ss.rolling.code == "RollingForward":
            ss.rolling.code, ss.rolling.end = "Cancelled", now
        for inst in list(ss.instances.values()):
            if inst.op != "delete":
                w.vms.begin(ss, inst, "delete", now, op, force=True)
        w.operations.seal(op, now)
        return op

    # -------------------------------------------------------------- placement
    def scale_to(self, ss: ScaleSet, capacity: int, now: float, op: Operation) -> None:
        """Grow or shrink to ``capacity``, keeping zones, FDs and UDs balanced as Compute does.

        New VMs go to the least-loaded zone, then fault domain, then update domain; scale-in
        follows Compute's default policy: most-loaded zone and FD first, highest id first.
        """
        live = ss.live()
        self.add_instances(ss, capacity - len(live), now, op)
        n_zone = Counter(i.zone for i in live)
        n_fd = Counter((i.zone, i.fd) for i in live)
        pool = sorted((i for i in live if not i.protected("scale-in")), key=lambda i: i.instance_id)
        for _ in range(min(len(pool), len(live) - capacity)):
            idle = [i for i in pool if i.op is None] or pool
            victim = max(idle, key=lambda i: (n_zone[i.zone], n_fd[i.zone, i.fd], i.instance_id))
            pool.remove(victim)
            n_zone[victim.zone] -= 1
            n_fd[victim.zone, victim.fd] -= 1
            self.world.vms.begin(ss, victim, "delete", now, op, force=True)

    def add_instances(self, ss: ScaleSet, count: int, now: float, op: Operation | None) -> list[Instance]:
        """Create ``count`` VMs on the latest model, each in the least-loaded zone, then FD/UD cell."""
        w = self.world
        live = ss.live()
        zones: list[str | None] = list(ss.zones) or [None]
        uds = 1 if ss.flexible else UPDATE_DOMAINS  # a Flexible set has no update domains
        n_zone = Counter(i.zone for i in live)
        n_fd = {z: [0] * ss.fault_domains for z in zones}
        n_ud = {z: [0] * uds for z in zones}
        n_cell = {z: [0] * (ss.fault_domains * uds) for z in zones}
        for i in live:
            if i.zone in n_fd and i.fd < ss.fault_domains and i.ud < uds:
                n_fd[i.zone][i.fd] += 1
                n_ud[i.zone][i.ud] += 1
                n_cell[i.zone][i.fd * uds + i.ud] += 1
        added = []
        image = self.resolve_image(ss.vm_profile["storageProfile"], ss.location) if count > 0 else {}
        for _ in range(count):
            zone = min(zones, key=lambda z: (n_zone[z], zones.index(z)))
            fds, ud_n, cells = n_fd[zone], n_ud[zone], n_cell[zone]
            fd, ud, cell = _emptiest_cell(uds, tuple(cells), tuple(fds), tuple(ud_n))
            n_zone[zone] += 1
            fds[fd] += 1
            ud_n[ud] += 1
            cells[cell] += 1
            iid = ss.next_instance_id
            ss.next_instance_id += 1
            inst = Instance(instance_id=iid, ud=ud, fd=fd, zone=zone,
                            vm_id=str(uuid.UUID(int=w.rng.getrandbits(128))),
                            image={}, profile="", created=now, changed=now,
                            name=f"{ss.name}_{w.rng.getrandbits(32):08x}" if ss.flexible else None)
            ss.instances[iid] = inst
            w.vms.begin(ss, inst, "create", now, op, resolved=image)
            added.append(inst)
        return added

    # ------------------------------------------------------------- validation
    def _validate_model(self, model: dict, old: ScaleSet | None, location: str) -> None:
        model["tags"] = validate.check_tags(model.get("tags"))
        sku = model.get("sku")
        if not isinstance(sku, dict) or not sku.get("name"):
            raise invalid("Required parameter 'sku.name' is missing (null).", "sku.name")
        if not isinstance(sku["name"], str) or not inputs.is_scale_set_name(sku["name"]):
            raise invalid(f"The value '{inputs.shown(sku['name'])}' of parameter 'sku.name' is not a VM size.",
                          "sku.name")
        zones = model.get("zones") or []
        if not isinstance(zones, list) or len(zones) > 3 or not all(z in ("1", "2", "3") for z in zones):
            raise invalid("The value of parameter 'zones' must be a list of the zones '1', '2' and '3'.", "zones")
        cap = sku.get("capacity", 0)
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0 or cap > 1000:
            raise invalid("The value of parameter 'sku.capacity' must be an integer from 0 to 1000.",
                          "sku.capacity")
        props = model.get("properties")
        if not isinstance(props, dict):
            raise invalid("Required parameter 'properties' is missing (null).", "properties")
        mode = str(props.get("orchestrationMode", "Uniform"))
        if mode.lower() not in ("uniform", "flexible"):
            raise invalid(f"The value '{inputs.shown(mode)}' of parameter 'orchestrationMode' is invalid: use "
                          "'Uniform' or 'Flexible'.", "properties.orchestrationMode")
        if old is not None and mode.lower() != ("flexible" if old.flexible else "uniform"):
            raise ArmError(400, "PropertyChangeNotAllowed", "Changing property 'orchestrationMode' is not allowed.",
                           "properties.orchestrationMode")
        if mode.lower() == "flexible":
            validate.check_flexible_fault_domains(props)
        vmp = props.get("virtualMachineProfile")
        if not isinstance(vmp, dict) or not isinstance(vmp.get("storageProfile"), dict):
            raise invalid("Required parameter 'virtualMachineProfile.storageProfile' is missing (null).",
                          "properties.virtualMachineProfile.storageProfile")
        images.validate(vmp["storageProfile"])
        validate.check_upgrade_policy(props.get("upgradePolicy") or {})
        fdc = props.get("platformFaultDomainCount", 5)
        if not isinstance(fdc, int) or not 1 <= fdc <= 5:
            raise invalid("platformFaultDomainCount must be from 1 to 5.", "properties.platformFaultDomainCount")
        if old is not None:
            images.check_kind_change(old.vm_profile["storageProfile"], vmp["storageProfile"])
            if sorted(model.get("zones") or []) != sorted(old.zones):
                raise ArmError(400, "PropertyChangeNotAllowed", "Changing property 'zones' is not allowed.", "zones")
            if fdc != old.fault_domains:
                raise ArmError(400, "PropertyChangeNotAllowed",
                               "Changing property 'platformFaultDomainCount' is not allowed.",
                               "properties.platformFaultDomainCount")
        self.resolve_image(vmp["storageProfile"], location)


def _fill_rolling_defaults(model: dict) -> None:
    """A Rolling policy without all of its settings gets Compute's defaults, kept and returned on every GET
    (seen in real responses: switching a set to Rolling with only ``mode`` returns all four)."""
    policy = model["properties"].get("upgradePolicy") or {}
    if str(policy.get("mode", "")).lower() == "rolling":
        rolling = policy.get("rollingUpgradePolicy") or {}
        policy["rollingUpgradePolicy"] = {**ROLLING_POLICY_DEFAULTS, **rolling}


def _keep_image_identity(old: ScaleSet, model: dict) -> None:
    """Compute fills a PUT's partial imageReference from the existing model.

    ``az vmss update --set ...imageReference.version=X`` PUTs ``{"version": X}`` alone and
    real Compute accepts it, so the emulator must too.
    """
    storage = ((model["properties"].get("virtualMachineProfile") or {}).get("storageProfile") or {})
    ref = storage.get("imageReference")
    old_ref = old.vm_profile["storageProfile"].get("imageReference")
    if isinstance(ref, dict) and old_ref and not any(
            ref.get(k) for k in ("publisher", "offer", "sku", "id", "sharedGalleryImageId",
                                 "communityGalleryImageId")):
        storage["imageReference"] = {**old_ref, **ref}
