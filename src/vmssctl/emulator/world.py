"""State and simulation of scale sets: no HTTP in here (moto's ``models.py``).

Everything that takes time is a list of timestamped steps on an instance (or a timer
on an operation, or the next move of a built-in rolling upgrade), kept in one heap.
``advance(now)`` applies due steps in time order, each at its own timestamp, so a
lazily advanced world is identical to one ticked continuously, and the availability
record carries the exact simulated time of every change.
"""

from __future__ import annotations

import copy
import hashlib
import heapq
import itertools
import json
import random
import re
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields

from vmssctl import inputs
from vmssctl.emulator import defaults, images, timing, validate
from vmssctl.emulator.clock import SimClock
from vmssctl.emulator.errors import ArmError, conflict, invalid, not_found
from vmssctl.emulator.faults import Faults
from vmssctl.emulator.rolling import ROLLING_POLICY_DEFAULTS, RollingUpgrade, RollingUpgrades

DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-00000000feed"
DEFAULT_TENANT = "00000000-0000-0000-0000-0000000a11ce"
UPDATE_DOMAINS = 5
READ_ONLY = ("provisioningState", "uniqueId", "timeCreated", "exactVersion")  # at any depth
HEALTH_EXTENSION_TYPES = ("applicationhealthlinux", "applicationhealthwindows")
AVAILABILITY_CAP = 200_000

SetKey = tuple[str, str]


def _key(rg: str, name: str) -> SetKey:
    return (rg.lower(), name.lower())


def _strip_read_only(node: object) -> object:
    if isinstance(node, dict):
        return {k: _strip_read_only(v) for k, v in node.items() if k not in READ_ONLY}
    if isinstance(node, list):
        return [_strip_read_only(v) for v in node]
    return node


def _merge(base: dict, patch: dict) -> dict:
    """ARM PATCH semantics: objects merge recursively, arrays and scalars replace, null removes."""
    out = dict(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _instance_number(raw: object) -> int | None:
    """An instance id as ARM spells it (ASCII digits), else None (no such instance)."""
    text = str(raw) if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 10 else None


def _check_location(location: object) -> None:
    if not isinstance(location, str) or not re.fullmatch(r"[A-Za-z0-9 ]{1,64}", location):
        raise invalid(f"The location '{inputs.shown(location)}' is not a valid Azure location name.", "location")


def _digest(obj: object) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


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
    etag: int = 1
    upgrades: int = 0  # OS disk replacements (upgrade/reimage), to prove nothing was upgraded twice
    protection: dict = field(default_factory=dict)  # protectionPolicy: protectFromScaleIn, protectFromScaleSetActions
    name: str | None = None  # a Flexible set's VM: its name (Microsoft.Compute/virtualMachines/{name}) is its id

    @property
    def external_id(self) -> str:
        """How ARM names the VM in instanceIds: the number in a Uniform set, the VM name in a Flexible one."""
        return self.name or str(self.instance_id)

    def protected(self, from_what: str) -> bool:
        """``scale-in``: kept at scale-in (either flag); ``actions``: left out of set-wide operations."""
        if from_what == "scale-in":
            return bool(self.protection.get("protectFromScaleIn") or self.protection.get("protectFromScaleSetActions"))
        return bool(self.protection.get("protectFromScaleSetActions"))


@dataclass
class Operation:
    """An ARM async operation: what ``Azure-AsyncOperation`` points at."""

    id: str
    name: str
    location: str
    start: float
    set_key: list | None = None
    pending: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    end_at: float | None = None
    status: str = "InProgress"
    end: float | None = None
    error: dict | None = None
    then: str | None = None  # what finishing does to the scale set: "ready" or "remove"


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
    running: int = 0
    healthy: int = 0
    subscription: str = ""  # the subscription of its resource group ("" in states saved before there were several)

    @property
    def key(self) -> SetKey:
        return _key(self.rg, self.name)

    @property
    def capacity(self) -> int:
        return int(self.model["sku"].get("capacity", 0))

    @property
    def vm_profile(self) -> dict:
        return self.model["properties"]["virtualMachineProfile"]

    @property
    def profile_digest(self) -> str:
        return _digest([self.vm_profile, self.model["sku"].get("name")])

    @property
    def fault_domains(self) -> int:
        return int(self.model["properties"].get("platformFaultDomainCount") or 5)

    @property
    def flexible(self) -> bool:
        """Flexible orchestration: the set's VMs are ordinary virtual machines, named, without update domains."""
        return str(self.model["properties"].get("orchestrationMode", "Uniform")).lower() == "flexible"

    def lookup(self, raw: object) -> Instance | None:
        """The VM an instanceId names: a number in a Uniform set, a VM name (any case) in a Flexible one."""
        if self.flexible:
            wanted = str(raw).lower()
            return next((i for i in self.instances.values() if (i.name or "").lower() == wanted), None)
        return self.instances.get(_instance_number(raw))

    @property
    def zones(self) -> list[str]:
        return list(self.model.get("zones") or [])

    def health_grace(self) -> float | None:
        """Grace period of the Application Health extension, or None when the model has none."""
        for ext in (self.vm_profile.get("extensionProfile") or {}).get("extensions") or []:
            props = ext.get("properties") or {}
            if str(props.get("type", "")).lower() in HEALTH_EXTENSION_TYPES:
                grace = (props.get("settings") or {}).get("gracePeriod")
                return float(grace) if grace is not None else timing.HEALTH_GRACE
        return None

    def live(self) -> list[Instance]:
        return [i for i in self.instances.values() if i.op != "delete"]


class World(RollingUpgrades):
    def __init__(self, clock: SimClock, faults: Faults | None = None, seed: int = 0,
                 subscription: str = DEFAULT_SUBSCRIPTION, tenant: str = DEFAULT_TENANT,
                 subscriptions: list[str] | None = None) -> None:
        self.clock = clock
        # every subscription it serves, the first the default; resource group names are unique across them
        self.subscriptions = [subscription, *[x for x in (subscriptions or []) if x.lower() != subscription.lower()]]
        self.faults = faults or Faults()
        self.rng = random.Random(seed)
        self.subscription = subscription
        self.tenant = tenant
        self.groups: dict[str, dict] = {}
        self.sets: dict[SetKey, ScaleSet] = {}
        self.ops: dict[str, Operation] = {}
        self.catalog = images.Catalog()
        self._heap: list = []
        self._seq = 0
        self.changes = 0  # bumped on every state change; the server persists when it moves

    # ----------------------------------------------------------------- time
    def _wake(self, t: float, kind: str, key: object) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, key))

    def now(self) -> float:
        return self.clock.now()

    def advance(self, now: float | None = None) -> float:
        """Apply every step due by ``now``, each at its own simulated time."""
        now = self.clock.now() if now is None else now
        heap = self._heap
        while heap and heap[0][0] <= now:
            t, _, kind, key = heapq.heappop(heap)
            if kind == "inst":
                ss = self.sets.get(key[0])
                inst = ss.instances.get(key[1]) if ss else None
                if inst is not None:
                    self._run_steps(ss, inst, t)
            elif kind == "op":
                op = self.ops.get(key)
                if op and op.status == "InProgress" and op.end_at is not None and op.end_at <= t:
                    self._finish_op(op, t)
            elif kind == "ru":
                ss = self.sets.get(key)
                if ss and ss.rolling and ss.rolling.code == "RollingForward" and ss.rolling.next_at <= t:
                    self._rolling_step(ss, t)
        return now

    def _jitter(self, base: float, factor: float = 1.0) -> float:
        return base * factor * self.rng.uniform(1 - timing.JITTER, 1 + timing.JITTER)

    # ------------------------------------------------------ resource groups
    def check_subscription(self, sub: str) -> None:
        if sub.lower() not in (x.lower() for x in self.subscriptions):
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")

    def sub_of(self, ss: ScaleSet) -> str:
        return ss.subscription or self.subscription

    def group_sub(self, grp: dict) -> str:
        """A resource group's subscription (groups saved before there were several are the default one's)."""
        return grp.get("subscription", self.subscription)

    def check_group_subscription(self, rg: str, sub: str) -> None:
        """A resource group of another subscription is not found in this one."""
        grp = self.groups.get(rg.lower())
        if grp is not None and self.group_sub(grp).lower() != sub.lower():
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")

    def put_group(self, name: str, location: str, tags: dict | None = None,
                  subscription: str | None = None) -> tuple[dict, bool]:
        validate.check_resource_group_name(name)
        _check_location(location)
        tags = validate.check_tags(tags)
        sub = subscription or self.subscription
        existing = self.groups.get(name.lower())
        if existing is not None and self.group_sub(existing).lower() != sub.lower():
            raise conflict(f"The emulator keeps resource group names unique across its subscriptions: '{name}' is "
                           "taken in another one.", "ResourceGroupNameTaken")
        created = existing is None
        grp = self.groups.setdefault(name.lower(), {"name": name, "location": location, "subscription": sub})
        grp["tags"] = tags or {}
        self.changes += 1
        return grp, created

    def group(self, name: str) -> dict:
        grp = self.groups.get(name.lower())
        if grp is None:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found.")
        return grp

    def delete_group(self, name: str) -> Operation:
        self.group(name)
        now = self.advance()
        for ss in [s for s in self.sets.values() if s.rg.lower() == name.lower()]:
            self._delete_set(ss, now)
        del self.groups[name.lower()]
        self.changes += 1
        op = self._new_op("DeleteResourceGroup", "global", now)
        self._seal_op(op, now)
        return op

    # ------------------------------------------------------------ scale sets
    def get_set(self, rg: str, name: str) -> ScaleSet:
        self.group(rg)
        ss = self.sets.get(_key(rg, name))
        if ss is None:
            raise not_found("Microsoft.Compute/virtualMachineScaleSets", name, rg)
        return ss

    def list_sets(self, rg: str | None = None, subscription: str | None = None) -> list[ScaleSet]:
        if rg is not None:
            self.group(rg)
        return [s for s in self.sets.values() if (rg is None or s.rg.lower() == rg.lower())
                and (subscription is None or self.sub_of(s).lower() == subscription.lower())]

    def _validate_model(self, model: dict, old: ScaleSet | None) -> None:
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
            fdc_flex = props.get("platformFaultDomainCount")
            if fdc_flex is None:
                raise invalid("Required parameter 'platformFaultDomainCount' is missing (null): a Flexible scale "
                              "set needs 1 (max spreading) or a fixed count of 2 or 3.",
                              "properties.platformFaultDomainCount")
            if not isinstance(fdc_flex, int) or isinstance(fdc_flex, bool) or not 1 <= fdc_flex <= 3:
                raise invalid("platformFaultDomainCount of a Flexible scale set must be 1, 2 or 3.",
                              "properties.platformFaultDomainCount")
        vmp = props.get("virtualMachineProfile")
        if not isinstance(vmp, dict) or not isinstance(vmp.get("storageProfile"), dict):
            raise invalid("Required parameter 'virtualMachineProfile.storageProfile' is missing (null).",
                          "properties.virtualMachineProfile.storageProfile")
        images.validate(vmp["storageProfile"])
        policy = props.get("upgradePolicy") or {}
        if str(policy.get("mode", "Manual")).lower() not in ("manual", "automatic", "rolling"):
            raise invalid(f"The value '{policy.get('mode')}' of parameter 'upgradePolicy.mode' is invalid.",
                          "properties.upgradePolicy.mode")
        rolling = policy.get("rollingUpgradePolicy") or {}
        for k in ("maxBatchInstancePercent", "maxUnhealthyInstancePercent", "maxUnhealthyUpgradedInstancePercent"):
            v = rolling.get(k)
            low = 5 if k == "maxBatchInstancePercent" else 0
            if v is not None and (not isinstance(v, int) or not low <= v <= 100):
                raise invalid(f"The value of parameter 'rollingUpgradePolicy.{k}' must be from {low} to 100.",
                              f"properties.upgradePolicy.rollingUpgradePolicy.{k}")
        for k in ("maxSurge", "rollbackFailedInstancesOnPolicyBreach", "prioritizeUnhealthyInstances"):
            if k in rolling and not isinstance(rolling[k], bool):
                raise invalid(f"The value of parameter 'rollingUpgradePolicy.{k}' must be true or false.",
                              f"properties.upgradePolicy.rollingUpgradePolicy.{k}")
        if "pauseTimeBetweenBatches" in rolling:
            try:
                timing.parse_iso_duration(rolling["pauseTimeBetweenBatches"])
            except ValueError as e:
                raise invalid(str(e), "properties.upgradePolicy.rollingUpgradePolicy.pauseTimeBetweenBatches") from None
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
        self._resolve_image(vmp["storageProfile"])

    def _resolve_image(self, storage: dict) -> dict:
        """The storage-profile fragment a VM built now would run."""
        kind = images.kind_of(storage)
        if kind == images.URI:
            return {"osDisk": {"image": {"uri": storage["osDisk"]["image"]["uri"]}}}
        ref = {k: v for k, v in storage["imageReference"].items() if v is not None}
        if kind == images.PLATFORM:
            ref["exactVersion"] = self.catalog.resolve(ref)
        return {"imageReference": ref}

    def put_set(self, rg: str, name: str, body: dict, if_match: str | None = None,
                if_none_match: str | None = None) -> tuple[ScaleSet, Operation, bool]:
        """Create or replace; returns (scale set, its LRO, created?)."""
        self.group(rg)
        now = self.advance()
        old = self.sets.get(_key(rg, name))
        if old is not None and old.provisioning == "Deleting":
            raise conflict(f"The operation 'PutVMScaleSet' is not allowed on scale set '{name}' since it is being "
                           "deleted. Wait until the deletion completes.")
        self._check_etag(old.etag if old else None, if_match, if_none_match)
        validate.check_shape(body)
        if old is None:
            validate.check_scale_set_name(name)
        location = body.get("location") or (old.location if old else None)
        if not location:
            raise invalid("Required parameter 'location' is missing (null).", "location")
        _check_location(location)
        model = _strip_read_only({k: body[k] for k in ("sku", "tags", "zones", "properties", "identity", "plan")
                                  if body.get(k) is not None})
        model.setdefault("properties", {})
        if old is not None:
            self._keep_image_identity(old, model)
        self._validate_model(model, old)
        defaults.apply(model)
        props = model["properties"]
        props.setdefault("upgradePolicy", {"mode": "Manual"})
        self._fill_rolling_defaults(model)
        props.setdefault("orchestrationMode", "Uniform")
        props["orchestrationMode"] = "Flexible" if str(props["orchestrationMode"]).lower() == "flexible" else "Uniform"
        props.setdefault("platformFaultDomainCount", 5)
        props.setdefault("singlePlacementGroup", props["orchestrationMode"] == "Uniform")
        props.setdefault("overprovision", False)
        if old is None:
            grp = self.group(rg)
            ss = ScaleSet(rg=grp["name"], name=name, location=location, model=model,
                          unique_id=str(uuid.UUID(int=self.rng.getrandbits(128))), created=now,
                          subscription=self.group_sub(grp))
            self.sets[ss.key] = ss
            self._record(ss, now)
            op = self._new_op("CreateScaleSet", location, now, ss, then="ready")
            self._scale_to(ss, ss.capacity, now, op)
            self._seal_op(op, now)
            return ss, op, True
        return old, self._apply_model(old, model, now), False

    @staticmethod
    def _fill_rolling_defaults(model: dict) -> None:
        """A Rolling policy without all of its settings gets Compute's defaults, kept and returned on every GET
        (seen in real responses: switching a set to Rolling with only ``mode`` returns all four)."""
        policy = model["properties"].get("upgradePolicy") or {}
        if str(policy.get("mode", "")).lower() == "rolling":
            rolling = policy.get("rollingUpgradePolicy") or {}
            policy["rollingUpgradePolicy"] = {**ROLLING_POLICY_DEFAULTS, **rolling}

    @staticmethod
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

    def patch_set(self, rg: str, name: str, body: dict, if_match: str | None = None) -> tuple[ScaleSet, Operation]:
        ss = self.get_set(rg, name)
        now = self.advance()
        if ss.provisioning == "Deleting":
            raise conflict(f"The operation 'PatchVMScaleSet' is not allowed on scale set '{name}' since it is being "
                           "deleted.")
        self._check_etag(ss.etag, if_match, None)
        validate.check_shape(body)
        patch = _strip_read_only({k: body[k] for k in ("sku", "tags", "properties", "identity", "plan", "zones")
                                  if k in body})
        model = _merge(ss.model, patch)
        if "tags" in patch:
            model["tags"] = patch["tags"] or {}
        self._validate_model(model, ss)
        self._fill_rolling_defaults(model)
        return ss, self._apply_model(ss, model, now)

    def _apply_model(self, ss: ScaleSet, model: dict, now: float) -> Operation:
        old_digest, old_cap = ss.profile_digest, ss.capacity
        ss.model = model
        ss.etag += 1
        self.changes += 1
        op = self._new_op("UpdateScaleSet", ss.location, now, ss, then="ready")
        if ss.capacity != old_cap:
            self._scale_to(ss, ss.capacity, now, op)
        if ss.profile_digest != old_digest:
            self._recount(ss, now)
            mode = str(ss.model["properties"]["upgradePolicy"].get("mode", "Manual")).lower()
            behind = [i for i in ss.live()
                      if i.profile != ss.profile_digest and i.op is None and not i.protected("actions")]
            if mode == "automatic" and behind:
                for inst in behind:
                    self._begin(ss, inst, "upgrade", now, None)
            elif mode == "rolling" and behind and not (ss.rolling and ss.rolling.code == "RollingForward"):
                self._start_rolling(ss, now, None)
        self._seal_op(op, now)
        return op

    def _check_etag(self, current: int | None, if_match: str | None, if_none_match: str | None) -> None:
        tag = f'"{current}"' if current is not None else None
        if if_match is not None:
            wanted = [t.strip() for t in if_match.split(",")]
            if tag is None or ("*" not in wanted and tag not in wanted and str(current) not in wanted):
                raise ArmError(412, "PreconditionFailed",
                               "The specified precondition 'If-Match' failed: the resource changed "
                               f"(current etag {tag or 'none: resource does not exist'}).")
        if if_none_match is not None and tag is not None:
            wanted = [t.strip() for t in if_none_match.split(",")]
            if "*" in wanted or tag in wanted:
                raise ArmError(412, "PreconditionFailed",
                               f"The specified precondition 'If-None-Match' failed (current etag {tag}).")

    def delete_set(self, rg: str, name: str) -> Operation:
        ss = self.get_set(rg, name)
        return self._delete_set(ss, self.advance())

    def _delete_set(self, ss: ScaleSet, now: float) -> Operation:
        op = self._new_op("DeleteScaleSet", ss.location, now, ss, then="remove")
        if ss.rolling and ss.rolling.code == "RollingForward":
            ss.rolling.code, ss.rolling.end = "Cancelled", now
        for inst in list(ss.instances.values()):
            if inst.op != "delete":
                self._begin(ss, inst, "delete", now, op, force=True)
        self._seal_op(op, now)
        return op

    # -------------------------------------------------------------- placement
    def _scale_to(self, ss: ScaleSet, capacity: int, now: float, op: Operation) -> None:
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
            self._begin(ss, victim, "delete", now, op, force=True)

    def add_instances(self, ss: ScaleSet, count: int, now: float, op: Operation | None) -> list[Instance]:
        """Create ``count`` VMs on the latest model, each in the least-loaded zone, then FD/UD cell."""
        live = ss.live()
        zones = ss.zones or [None]
        n_zone = Counter(i.zone for i in live)
        n_fd = Counter((i.zone, i.fd) for i in live)
        n_ud = Counter((i.zone, i.ud) for i in live)
        n_cell = Counter((i.zone, i.fd, i.ud) for i in live)
        added = []
        uds = 1 if ss.flexible else UPDATE_DOMAINS  # a Flexible set has no update domains
        for _ in range(count):
            zone = min(zones, key=lambda z: (n_zone[z], zones.index(z)))
            # emptiest (FD, UD) cell, then the least-loaded FD and UD: diagonals, as Compute spreads them. With
            # max spreading (a Flexible set's platformFaultDomainCount 1) every VM reports fault domain 0.
            fd, ud = min(itertools.product(range(ss.fault_domains), range(uds)),
                         key=lambda c: (n_cell[zone, c[0], c[1]], n_fd[zone, c[0]] + n_ud[zone, c[1]],
                                        max(n_fd[zone, c[0]], n_ud[zone, c[1]]), c[0], (c[1] - c[0]) % uds))
            n_zone[zone] += 1
            n_fd[zone, fd] += 1
            n_ud[zone, ud] += 1
            n_cell[zone, fd, ud] += 1
            iid = ss.next_instance_id
            ss.next_instance_id += 1
            inst = Instance(instance_id=iid, ud=ud, fd=fd, zone=zone,
                            vm_id=str(uuid.UUID(int=self.rng.getrandbits(128))),
                            image={}, profile="", created=now, changed=now,
                            name=f"{ss.name}_{self.rng.getrandbits(32):08x}" if ss.flexible else None)
            ss.instances[iid] = inst
            self._begin(ss, inst, "create", now, op)
            added.append(inst)
        return added

    # ------------------------------------------------------------ operations
    def _new_op(self, name: str, location: str, now: float, ss: ScaleSet | None = None,
                then: str | None = None) -> Operation:
        op = Operation(id=str(uuid.UUID(int=self.rng.getrandbits(128))), name=name, location=location,
                       start=now, set_key=list(ss.key) if ss else None, then=then)
        self.ops[op.id] = op
        if ss is not None and then:
            ss.busy.append(op.id)
            if then == "remove":
                ss.provisioning = "Deleting"
            elif ss.provisioning != "Creating":
                ss.provisioning = "Updating"
        if len(self.ops) > 20_000:
            for old in [o for o in self.ops.values() if o.status != "InProgress"][:5_000]:
                del self.ops[old.id]
        return op

    def _seal_op(self, op: Operation, now: float) -> None:
        """An op with no instance work still takes a moment, as ARM's model updates do."""
        if not op.pending and op.status == "InProgress":
            op.end_at = now + timing.MODEL_UPDATE
            self._wake(op.end_at, "op", op.id)

    def _finish_op(self, op: Operation, t: float) -> None:
        op.end = t
        if op.failures:
            op.status = "Failed"
            first = op.failures[0]
            details = [{"code": f["code"], "target": f"instanceId {f['instanceId']}", "message": f["message"]}
                       for f in op.failures]
            op.error = {"code": first["code"],
                        "message": f"{len(op.failures)} instance(s) failed: " + "; ".join(
                            f"instance {f['instanceId']}: {f['message']}" for f in op.failures[:5]),
                        "details": details}
        elif op.status == "InProgress":
            op.status = "Succeeded"
        if op.set_key:
            ss = self.sets.get(tuple(op.set_key))
            if ss is not None and op.id in ss.busy:
                ss.busy.remove(op.id)
                if op.then == "remove":
                    del self.sets[ss.key]
                elif not ss.busy:
                    ss.provisioning = "Failed" if op.failures else "Succeeded"
        self.changes += 1

    def op_status(self, op_id: str) -> Operation:
        self.advance()
        op = self.ops.get(op_id)
        if op is None:
            raise ArmError(404, "ResourceNotFound", f"The operation '{op_id}' was not found.")
        return op

    FINAL_STEPS = ("booted", "done", "gone")

    def op_remaining(self, op: Operation) -> float:
        """Simulated seconds until the op is expected to end (its slowest instance), for Retry-After."""
        ends = [op.end_at] if op.end_at is not None else []
        ss = self.sets.get(tuple(op.set_key)) if op.set_key else None
        for iid in op.pending if ss else ():
            inst = ss.instances.get(iid)
            if inst is not None:
                ends += [t for t, action in inst.steps if action in self.FINAL_STEPS]
        return max(0.0, (max(ends) if ends else self.now() + timing.LRO_POLL) - self.now())

    # ------------------------------------------------------------- instances
    def _instances(self, ss: ScaleSet, ids: Iterable[str] | None) -> list[Instance]:
        if ids is None:
            return sorted(ss.live(), key=lambda i: i.instance_id)
        out = []
        for raw in ids:
            inst = ss.lookup(raw)
            if inst is None or inst.op == "delete":
                raise invalid(f"The provided instanceId {raw} is not an active Virtual Machine Scale Set VM "
                              "instanceId.", "instanceIds")
            if inst not in out:
                out.append(inst)
        return out

    def get_instance(self, rg: str, name: str, iid: str) -> tuple[ScaleSet, Instance]:
        ss = self.get_set(rg, name)
        self.advance()
        inst = ss.lookup(iid)
        if inst is None:
            raise not_found("Microsoft.Compute/virtualMachineScaleSets/virtualMachines", f"{name}/{iid}", rg)
        return ss, inst

    def flexible_vms(self, rg: str, set_id: str | None = None) -> list[tuple[ScaleSet, Instance]]:
        """The virtual machines of the Flexible sets in ``rg`` (of one set, by its resource id), oldest first."""
        self.group(rg)
        self.advance()
        out = []
        for ss in self.list_sets(rg):
            if ss.flexible and (set_id is None or set_id.lower().endswith(
                    f"/resourcegroups/{ss.rg}/providers/microsoft.compute/virtualmachinescalesets/{ss.name}".lower())):
                out += [(ss, i) for i in sorted(ss.instances.values(), key=lambda i: i.instance_id)]
        return out

    def find_vm(self, rg: str, vm_name: str) -> tuple[ScaleSet, Instance]:
        """A Flexible set's VM by its name (404 as for any virtual machine that does not exist)."""
        for ss, inst in self.flexible_vms(rg):
            if (inst.name or "").lower() == vm_name.lower():
                return ss, inst
        raise not_found("Microsoft.Compute/virtualMachines", vm_name, rg)

    def update_instance(self, rg: str, name: str, iid: str, body: object, if_match: str | None,
                        if_none_match: str | None) -> tuple[ScaleSet, Instance, Operation]:
        """PUT on one VM: the emulator keeps no per-VM model, so it checks preconditions and echoes it."""
        ss, inst = self.get_instance(rg, name, iid)
        self._check_etag(inst.etag, if_match, if_none_match)
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
            self.changes += 1
        now = self.now()
        op = self._new_op("UpdateScaleSetVM", ss.location, now)
        self._seal_op(op, now)
        return ss, inst, op

    ACTIONS = {
        "manualupgrade": "upgrade", "reimage": "reimage", "reimageall": "reimage", "restart": "restart",
        "start": "start", "poweroff": "poweroff", "deallocate": "deallocate", "delete": "delete",
        "redeploy": "redeploy", "performmaintenance": "redeploy",
    }

    def act(self, rg: str, name: str, action: str, ids: list[str] | None) -> Operation:
        """A set- or instance-level action; validates every instance before touching any."""
        ss = self.get_set(rg, name)
        now = self.advance()
        kind = self.ACTIONS[action]
        if ss.provisioning == "Deleting":
            raise conflict(f"The scale set '{name}' is being deleted.")
        targets = self._instances(ss, ids)
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
        op = self._new_op(action, ss.location, now, ss if kind == "delete" else None,
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
            self._begin(ss, inst, kind, now, op, force=kind == "delete")
        if kind == "delete":
            ss.model["sku"]["capacity"] = len(ss.live())
            ss.etag += 1
        self._seal_op(op, now)
        self.changes += 1
        return op

    def _facts(self, ss: ScaleSet, inst: Instance, image: dict) -> dict[str, str]:
        ref = image.get("imageReference") or {}
        return {
            "publisher": ref.get("publisher", ""), "offer": ref.get("offer", ""), "sku": ref.get("sku", ""),
            "version": ref.get("exactVersion") or ref.get("version", ""),
            "id": ref.get("id") or ref.get("sharedGalleryImageId") or ref.get("communityGalleryImageId") or "",
            "uri": ((image.get("osDisk") or {}).get("image") or {}).get("uri", ""),
            "scaleSet": ss.name, "instanceId": inst.external_id,
        }

    def _begin(self, ss: ScaleSet, inst: Instance, kind: str, now: float, op: Operation | None,
               force: bool = False) -> None:
        """Start ``kind`` on an instance: set its immediate state and schedule the rest."""
        if inst.op is not None and not force:
            raise conflict(f"Operation '{inst.op}' is in progress on instance {inst.external_id}.")
        if inst.op_id and inst.op_id in self.ops:  # superseded (a delete wins): release the old op
            self._instance_done(ss, inst, now, None)
        image, profile = inst.image, inst.profile
        if kind in ("upgrade", "reimage"):
            inst.upgrades += 1
        if kind in ("upgrade", "create"):
            image, profile = self._resolve_image(ss.vm_profile["storageProfile"]), ss.profile_digest
        elif kind == "reimage" and inst.profile == ss.profile_digest:
            # a reimage of an up-to-date VM whose model says 'latest' takes the newest published version
            image = self._resolve_image(ss.vm_profile["storageProfile"])
        effect, code, factor = self.faults.outcome(self._facts(ss, inst, image))
        boots = any("booted" in actions for _, actions in timing.SCRIPTS[kind][2])
        inst.pending = {"image": image, "profile": profile,
                        "effect": effect if boots else None, "code": code}
        inst.op, inst.op_id = kind, (op.id if op else None)
        if op is not None:
            op.pending.append(inst.instance_id)
        t = now
        steps: list[list] = []
        before = self._counts(ss, inst)
        inst.power, inst.provisioning, script = timing.SCRIPTS[kind]
        for duration, actions in script:
            t += self._jitter(duration, factor)
            steps += [[t, action] for action in actions]
        inst.health = None
        inst.error = None
        inst.steps = steps
        inst.changed = now
        inst.etag += 1
        self._after_change(ss, inst, before, now)
        self._wake(steps[0][0], "inst", (ss.key, inst.instance_id))

    def _run_steps(self, ss: ScaleSet, inst: Instance, t: float) -> None:
        while inst.steps and inst.steps[0][0] <= t:
            at, action = inst.steps.pop(0)
            before = self._counts(ss, inst)
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
                    self._instance_done(ss, inst, at, inst.error)
                else:
                    inst.provisioning = "Succeeded"
                    if grace is not None:
                        inst.health = "initializing"
                        inst.steps.append([at + grace, "health"])
                    self._instance_done(ss, inst, at, None)
            elif action == "health":
                if inst.power == "running":
                    inst.health = "unhealthy" if pending.get("effect") == "unhealthy" else "healthy"
            elif action == "done":
                inst.provisioning = "Succeeded"
                self._instance_done(ss, inst, at, None)
            elif action == "gone":
                inst.power, inst.health = "deallocated", None
                self._instance_done(ss, inst, at, None)
                del ss.instances[inst.instance_id]
            inst.changed = at
            inst.etag += 1
            self._after_change(ss, inst, before, at)
            if action == "gone":
                return
        if inst.steps:
            self._wake(inst.steps[0][0], "inst", (ss.key, inst.instance_id))

    def _instance_done(self, ss: ScaleSet, inst: Instance, t: float, error: dict | None) -> None:
        op = self.ops.get(inst.op_id) if inst.op_id else None
        inst.op, inst.op_id = None, None
        if op is None:
            return
        if inst.instance_id in op.pending:
            op.pending.remove(inst.instance_id)
        if error:
            op.failures.append({"instanceId": inst.external_id, **error})
        if not op.pending and op.status == "InProgress" and op.end_at is None:
            self._finish_op(op, t)

    # ---------------------------------------------------------- availability
    def _counts(self, ss: ScaleSet, inst: Instance) -> tuple[bool, bool]:
        running = inst.power == "running"
        healthy = running and inst.provisioning == "Succeeded" and (
            inst.health == "healthy" or (inst.health is None and ss.health_grace() is None))
        return running, healthy

    def is_healthy(self, ss: ScaleSet, inst: Instance) -> bool:
        return self._counts(ss, inst)[1]

    def _after_change(self, ss: ScaleSet, inst: Instance, before: tuple[bool, bool], t: float) -> None:
        after = self._counts(ss, inst) if inst.instance_id in ss.instances else (False, False)
        if after != before:
            ss.running += after[0] - before[0]
            ss.healthy += after[1] - before[1]
            self._record(ss, t)
        self.changes += 1

    def _recount(self, ss: ScaleSet, t: float) -> None:
        counts = [self._counts(ss, i) for i in ss.instances.values()]
        ss.running, ss.healthy = sum(c[0] for c in counts), sum(c[1] for c in counts)
        self._record(ss, t)

    def _record(self, ss: ScaleSet, t: float) -> None:
        row = [round(t, 3), ss.running, ss.healthy, ss.capacity]
        if ss.availability and ss.availability[-1][1:] == row[1:]:
            return
        ss.availability.append(row)
        if len(ss.availability) > AVAILABILITY_CAP:
            del ss.availability[: AVAILABILITY_CAP // 10]

    @staticmethod
    def availability_since(ss: ScaleSet, since: float | None, records: bool = True) -> dict:
        rows = ss.availability
        if since is not None:
            start = 0
            for i, r in enumerate(rows):
                if r[0] <= since:
                    start = i
                else:
                    break
            rows = rows[start:]
        return {
            "running": ss.running, "healthy": ss.healthy, "capacity": ss.capacity,
            "upgrades": {i.external_id: i.upgrades for i in ss.instances.values() if i.upgrades},
            "minRunning": min((r[1] for r in rows), default=ss.running),
            "minHealthy": min((r[2] for r in rows), default=ss.healthy),
            **({"records": [{"time": r[0], "running": r[1], "healthy": r[2], "capacity": r[3]} for r in rows]}
               if records else {}),
        }

    # ------------------------------------------------------------ persistence
    SCHEMA = 1  # of the state file; bump when dump() changes shape

    def dump(self) -> dict:
        return {
            "schema": self.SCHEMA, "now": self.now(), "subscription": self.subscription, "tenant": self.tenant,
            "subscriptions": self.subscriptions,
            "rng": list(self.rng.getstate()[1]), "rngPos": self.rng.getstate()[2],
            "groups": self.groups, "catalog": self.catalog.dump(), "faults": self.faults.to_json(),
            # shallow copies: the caller serializes at once, and asdict's deep copies made a save of a
            # 1,000-VM world cost more than the request that caused it
            "ops": [dict(vars(o)) for o in self.ops.values()],
            "sets": [{**{f.name: getattr(s, f.name) for f in fields(s) if f.name not in ("instances", "rolling")},
                      "instances": [dict(vars(i)) for i in s.instances.values()],
                      "rolling": asdict(s.rolling) if s.rolling else None} for s in self.sets.values()],
        }

    @classmethod
    def load(cls, state: dict, clock: SimClock, faults: Faults | None = None) -> World:
        world = cls(clock, faults, subscription=state["subscription"], tenant=state["tenant"],
                    subscriptions=state.get("subscriptions"))
        world.rng.setstate((3, tuple(state["rng"]), state["rngPos"]))
        world.groups = state["groups"]
        world.catalog = images.Catalog(state["catalog"])
        for o in state["ops"]:
            op = Operation(**o)
            world.ops[op.id] = op
            if op.status == "InProgress" and op.end_at is not None:
                world._wake(op.end_at, "op", op.id)
        for s in state["sets"]:
            insts, rolling = s.pop("instances"), s.pop("rolling")
            ss = ScaleSet(**s)
            ss.rolling = RollingUpgrade(**rolling) if rolling else None
            for d in insts:
                inst = Instance(**d)
                ss.instances[inst.instance_id] = inst
                if inst.steps:
                    world._wake(inst.steps[0][0], "inst", (ss.key, inst.instance_id))
            if ss.rolling and ss.rolling.code == "RollingForward":
                world._wake(ss.rolling.next_at, "ru", ss.key)
            world.sets[ss.key] = ss
        return world
