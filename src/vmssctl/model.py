"""vmssctl's own view of a scale set and its instances, read from the SDK's models.

Everything downstream (plans, gates, renderers) works on these types, never on the
SDK's classes or raw ARM JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


def id_key(instance_id: str) -> tuple[int, int, str]:
    """Sort key for instance ids: a Uniform set's numbers in numeric order, a Flexible set's VM names by name."""
    return (0, int(instance_id), "") if instance_id.isdigit() else (1, 0, instance_id.lower())


@dataclass(frozen=True)
class ImageRef:
    """One of Compute's three image kinds: platform (publisher/offer/sku/version), id, or VHD uri."""

    publisher: str | None = None
    offer: str | None = None
    sku: str | None = None
    version: str | None = None
    id: str | None = None
    uri: str | None = None
    exact_version: str | None = None

    @property
    def kind(self) -> str:
        if self.id:
            return "id"
        if self.uri:
            return "uri"
        return "platform"

    def __str__(self) -> str:
        if self.kind == "id":
            return self.id or ""
        if self.kind == "uri":
            return self.uri or ""
        exact = f" ({self.exact_version})" if self.exact_version and self.exact_version != self.version else ""
        return f"{self.publisher}:{self.offer}:{self.sku}:{self.version}{exact}"

    @property
    def short(self) -> str:
        """A list's cell: a platform image's SKU and version, a gallery image's name and version, a URI's file."""
        gallery = self.gallery_version
        if gallery:
            return f"{gallery[2]} {gallery[3]}"
        if self.kind == "platform":
            return f"{self.sku}:{self.exact_version or self.version}"
        return (self.id or self.uri or "").rstrip("/").rsplit("/", 1)[-1]

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def exact_platform(self) -> bool:
        """A platform image naming one version (not 'latest'): what Compute lists, or not, in a region."""
        return self.kind == "platform" and bool(self.version) and (self.version or "").lower() != "latest"

    @property
    def gallery_version(self) -> tuple[str, str, str, str] | None:
        """(resource group, gallery, image definition, version) of a Compute Gallery image version's id; None for
        any other image (a platform one, a managed image, a gallery image without a version, a shared gallery's)."""
        parts = (self.id or "").strip("/").split("/")
        low = [x.lower() for x in parts]
        if len(parts) != 12 or low[6] != "galleries" or low[8] != "images" or low[10] != "versions":
            return None
        return parts[3], parts[7], parts[9], parts[11]

    @classmethod
    def from_storage_profile(cls, storage: object) -> ImageRef:
        ref = getattr(storage, "image_reference", None)
        if ref is not None and (ref.id or ref.shared_gallery_image_id or ref.community_gallery_image_id):
            return cls(id=ref.id or ref.shared_gallery_image_id or ref.community_gallery_image_id)
        if ref is not None and ref.publisher:
            return cls(publisher=ref.publisher, offer=ref.offer, sku=ref.sku, version=ref.version,
                       exact_version=getattr(ref, "exact_version", None))
        image = getattr(getattr(storage, "os_disk", None), "image", None)
        return cls(uri=getattr(image, "uri", None))


@dataclass(frozen=True)
class ScaleSet:
    resource_group: str
    name: str
    location: str
    capacity: int
    vm_size: str
    image: ImageRef
    upgrade_mode: str
    orchestration_mode: str
    provisioning_state: str
    fault_domains: int
    zones: tuple[str, ...]
    etag: str | None
    tags: dict = field(default_factory=dict, hash=False, compare=False)
    health_signal: str | None = None  # what tells Azure a VM serves: the health extension or an LB probe
    health_grace: float | None = None  # the health extension's gracePeriod in seconds, when its settings say
    rolling_batch_percent: int | None = None  # rollingUpgradePolicy.maxBatchInstancePercent (Rolling sets)
    rolling_max_surge: bool = False  # rollingUpgradePolicy.maxSurge: Azure replaces VMs instead of upgrading them
    lb_pools: tuple[str, ...] = ()  # the load balancer backend pools its NIC configurations name (resource ids)
    gateway_pools: tuple[str, ...] = ()  # the Application Gateway backend pools they name
    subnets: tuple[str, ...] = ()  # the subnets its NICs join (new VMs join them: blue/green's set, a surge)

    def joins(self, strategy: str, drain: str) -> list[tuple[str, str]]:
        """(join action, resource id) a rollout writes into ARM's linked access check: a new set's model names its
        subnets and every pool (blue/green); a VM's own network configuration, rewritten to leave and rejoin an
        Application Gateway's pools, names its subnets and those pools (``--drain appgw``)."""
        subnet = [("Microsoft.Network/virtualNetworks/subnets/join/action", s) for s in self.subnets]
        lb = [("Microsoft.Network/loadBalancers/backendAddressPools/join/action", p) for p in self.lb_pools]
        gw = [("Microsoft.Network/applicationGateways/backendAddressPools/join/action", p)
              for p in self.gateway_pools]
        if strategy == "blue-green":
            return subnet + lb + gw
        return subnet + gw if drain == "appgw" else []

    @property
    def has_health_signal(self) -> bool:
        return self.health_signal is not None

    @property
    def fronted(self) -> bool:
        """Does a load balancer or an Application Gateway stand in front of it (its NICs name a pool)?"""
        return bool(self.lb_pools or self.gateway_pools)

    @classmethod
    def from_sdk(cls, vmss: Any, resource_group: str) -> ScaleSet:
        vmp = vmss.virtual_machine_profile
        return cls(
            resource_group=resource_group, name=vmss.name, location=vmss.location,
            capacity=vmss.sku.capacity or 0, vm_size=vmss.sku.name,
            image=ImageRef.from_storage_profile(vmp.storage_profile),
            upgrade_mode=_text(vmss.upgrade_policy.mode if vmss.upgrade_policy else None) or "Manual",
            orchestration_mode=_text(vmss.orchestration_mode) or "Uniform",
            provisioning_state=vmss.provisioning_state or "", fault_domains=vmss.platform_fault_domain_count or 5,
            zones=tuple(vmss.zones or ()), etag=vmss.etag, tags=dict(vmss.tags or {}),
            health_signal=_health_signal(vmp), health_grace=_health_grace(vmp),
            rolling_batch_percent=getattr(_rolling_policy(vmss), "max_batch_instance_percent", None),
            rolling_max_surge=bool(getattr(_rolling_policy(vmss), "max_surge", False)),
            lb_pools=_pools(vmp, "load_balancer_backend_address_pools"),
            gateway_pools=_pools(vmp, "application_gateway_backend_address_pools"),
            subnets=_named(vmp, lambda ipc: [getattr(getattr(ipc, "subnet", None), "id", None)]),
        )

    def to_json(self) -> dict:
        d = asdict(self)
        d["image"] = {k: v for k, v in asdict(self.image).items() if v is not None} | {"kind": self.image.kind}
        return d


@dataclass(frozen=True)
class RollingStatus:
    """Azure's own rolling upgrade of a set (``rollingUpgrades/latest``): what vmssctl watches on Rolling sets."""

    code: str  # RollingForward, Cancelled, Completed, Faulted
    error: str | None = None  # why it faulted, as ARM says
    succeeded: int = 0
    failed: int = 0
    in_progress: int = 0
    pending: int = 0

    @property
    def running(self) -> bool:
        return self.code == "RollingForward"

    @classmethod
    def from_sdk(cls, status: object) -> RollingStatus:
        running = getattr(status, "running_status", None)
        progress = getattr(status, "progress", None)
        err = getattr(status, "error", None)
        return cls(code=_text(getattr(running, "code", None)) or "Unknown",
                   error=f"({err.code}) {err.message}" if err is not None and getattr(err, "code", None) else None,
                   succeeded=getattr(progress, "successful_instance_count", 0) or 0,
                   failed=getattr(progress, "failed_instance_count", 0) or 0,
                   in_progress=getattr(progress, "in_progress_instance_count", 0) or 0,
                   pending=getattr(progress, "pending_instance_count", 0) or 0)


@dataclass(frozen=True)
class State:
    """One of an instance's combined states: its name, what it means, and its colour on a terminal and a page."""

    name: str
    meaning: str
    terminal: str  # a rich colour
    page: str  # a CSS colour


# Worst last in the legend, in the order the views list them. "current" and "outdated" are both healthy: a
# view's "healthy" count is ``Instance.healthy`` (what the floor counts), never one of these states alone.
STATES: tuple[State, ...] = (
    State("current", "running, healthy, latest model", "green", "#16a34a"),
    State("outdated", "running, healthy, older model", "blue", "#2563eb"),
    State("upgrading", "an operation is in progress", "yellow", "#eab308"),
    State("initializing", "booted, health grace period", "cyan", "#06b6d4"),
    State("unhealthy", "running but not healthy", "red", "#dc2626"),
    State("failed", "provisioning failed", "bold red", "#7f1d1d"),
    State("stopped", "stopped (still billed)", "dark_orange", "#f97316"),
    State("deallocated", "deallocated", "grey50", "#9ca3af"),
)
STATE = {s.name: s for s in STATES}


@dataclass(frozen=True)
class Instance:
    instance_id: str
    update_domain: int | None
    fault_domain: int | None
    zone: str | None
    power: str  # running, stopped, deallocated, starting, stopping, deallocating, unknown
    provisioning: str  # succeeded, updating, creating, failed, deleting
    health: str | None  # healthy, unhealthy, initializing, unknown; None = no health extension
    latest_model: bool
    image: ImageRef
    error: str | None = None  # provisioning failure code and message
    health_since: float | None = None  # when the health state last changed (epoch seconds), from ARM
    protected_from_scale_in: bool = False  # protectionPolicy: kept at scale-in (vmssctl never deletes it)
    protected_from_actions: bool = False  # protectionPolicy: scale set actions pass it over (never upgraded)

    @property
    def healthy(self) -> bool:
        """Serving: running, provisioned, and healthy where the health extension reports."""
        return (self.power == "running" and self.provisioning == "succeeded"
                and self.health in (None, "healthy"))

    @property
    def state(self) -> str:
        """One label combining power, provisioning, health and model, worst first (one of ``STATES``)."""
        if self.provisioning == "failed":
            return "failed"
        if self.power in ("deallocated", "deallocating"):
            return "deallocated"
        if self.power in ("stopped", "stopping") and self.provisioning == "succeeded":
            return "stopped"
        if self.provisioning in ("updating", "creating", "deleting") or self.power in ("starting", "stopping"):
            return "upgrading"
        if self.health == "initializing":
            return "initializing"
        if not self.healthy:
            return "unhealthy"
        return "current" if self.latest_model else "outdated"

    @classmethod
    def from_sdk(cls, vm: Any) -> Instance:
        """A Uniform set's VM (``VirtualMachineScaleSetVM``, with its instance view)."""
        protection = getattr(vm, "protection_policy", None)
        return cls(
            instance_id=vm.instance_id, zone=(vm.zones or [None])[0], latest_model=bool(vm.latest_model_applied),
            image=ImageRef.from_storage_profile(vm.storage_profile),
            protected_from_scale_in=bool(getattr(protection, "protect_from_scale_in", False)),
            protected_from_actions=bool(getattr(protection, "protect_from_scale_set_actions", False)),
            **_view(vm.instance_view, vm.provisioning_state),
        )

    @classmethod
    def from_vm(cls, vm: Any, model_image: ImageRef) -> Instance:
        """A Flexible set's VM (``VirtualMachine``, with its instance view): named by its name, no update domain.
        Compute reports no latestModelApplied for it, so the VM is on the latest model when it runs the model's
        image (the only part of the model vmssctl changes)."""
        from vmssctl.target import same_image

        image = ImageRef.from_storage_profile(vm.storage_profile)
        fields = _view(vm.instance_view, vm.provisioning_state)
        fields["update_domain"] = None
        return cls(instance_id=vm.name, zone=(vm.zones or [None])[0], image=image,
                   latest_model=same_image(image, model_image), **fields)

    def to_json(self) -> dict:
        d = asdict(self)
        d["image"] = str(self.image)
        d["healthy"] = self.healthy
        d["state"] = self.state
        return d


def _view(view: Any, provisioning_state: str | None) -> dict:
    """Power, provisioning, health (with when it changed), failure and UD/FD from an instance view."""
    out: dict = {"power": "unknown", "provisioning": (provisioning_state or "unknown").lower(), "health": None,
                 "error": None, "health_since": None, "update_domain": None, "fault_domain": None}
    if view is None:
        return out
    out["update_domain"], out["fault_domain"] = view.platform_update_domain, view.platform_fault_domain
    for st in view.statuses or []:
        code = st.code or ""
        if code.startswith("PowerState/"):
            out["power"] = code.split("/", 1)[1]
        elif code.startswith("ProvisioningState/"):
            parts = code.split("/")
            out["provisioning"] = parts[1]
            if parts[1] == "failed":
                out["error"] = f"{parts[2] if len(parts) > 2 else 'ProvisioningFailed'}: {st.message or ''}".strip()
    if view.vm_health is not None and view.vm_health.status is not None:
        out["health"] = (view.vm_health.status.code or "").split("/", 1)[-1].lower() or "unknown"
        since = view.vm_health.status.time
        out["health_since"] = since.timestamp() if since is not None else None
    return out


def grid_shape(fault_domains: int, instances: list[Instance]) -> tuple[int, int]:
    """(update domains, fault domains) a heatmap needs: at least 5 x the set's FD count."""
    uds = max([5, *[(i.update_domain or 0) + 1 for i in instances]])
    fds = max([fault_domains, *[(i.fault_domain or 0) + 1 for i in instances]])
    return uds, fds


HEALTH_EXTENSIONS = ("applicationhealthlinux", "applicationhealthwindows")


def _health_signal(vmp: object) -> str | None:
    """'Application Health extension', 'load balancer probe' or None, from a scale set's VM profile."""
    profile = getattr(vmp, "extension_profile", None)
    for ext in (getattr(profile, "extensions", None) or []):
        props = getattr(ext, "properties", None)
        if (getattr(props, "type", None) or "").lower() in HEALTH_EXTENSIONS:
            return "Application Health extension"
    network = getattr(vmp, "network_profile", None)
    if getattr(getattr(network, "health_probe", None), "id", None):
        return "load balancer probe"
    return None


def _health_grace(vmp: object) -> float | None:
    """The Application Health extension's ``gracePeriod`` setting (seconds), if the model sets one."""
    profile = getattr(vmp, "extension_profile", None)
    for ext in (getattr(profile, "extensions", None) or []):
        props = getattr(ext, "properties", None)
        if (getattr(props, "type", None) or "").lower() in HEALTH_EXTENSIONS:
            grace = grace_period(getattr(props, "settings", None))
            if grace is not None:
                return grace
    return None


def grace_period(settings: object) -> float | None:
    """A health extension's ``gracePeriod`` setting in seconds, where it is one (a number from 0 to 4 hours)."""
    grace = settings.get("gracePeriod") if isinstance(settings, dict) else None
    if isinstance(grace, int | float) and not isinstance(grace, bool) and 0 <= grace <= 14400:
        return float(grace)
    return None


def unique_ids(ids: Iterable[str | None]) -> tuple[str, ...]:
    """Resource ids once each (compared without case), in the order given."""
    out: list[str] = []
    for rid in ids:
        if rid and rid.lower() not in (p.lower() for p in out):
            out.append(rid)
    return tuple(out)


def _rolling_policy(vmss: object) -> object:
    return getattr(getattr(vmss, "upgrade_policy", None), "rolling_upgrade_policy", None)


def _text(value: Any) -> str | None:
    """The SDK's enums print as 'UpgradeMode.MANUAL'; ARM's value is 'Manual'."""
    return getattr(value, "value", value)


def _named(vmp: Any, ids: Any) -> tuple[str, ...]:
    """The resource ids ``ids(ip_configuration)`` gives over a model's NIC IP configurations, once each, in order."""
    nics = getattr(getattr(vmp, "network_profile", None), "network_interface_configurations", None) or []
    return unique_ids(rid for nic in nics for ipc in getattr(nic, "ip_configurations", None) or [] for rid in ids(ipc))


def _pools(vmp: Any, attr: str) -> tuple[str, ...]:
    """The backend pools (a load balancer's or an Application Gateway's: ``attr``) a model's NICs name."""
    return _named(vmp, lambda ipc: [getattr(pool, "id", None) for pool in getattr(ipc, attr, None) or []])


@dataclass(frozen=True)
class Backend:
    """A VM's place behind a load balancer rule: what the load balancer says of it for new connections."""

    load_balancer: str  # resource group/name
    rule: str
    pool: str
    address: str  # its name among the pool's backend addresses (what sets its admin state)
    instance_id: str
    state: str  # Up | Down: the rule's health (probe, then admin state)
    reason: str
    admin: str  # None | Up | Down
    probe: str = ""  # the rule's health probe ("": none, every backend counts as Up)
    gateway: bool = False  # an Application Gateway's (no admin state: a VM leaves its rotation by leaving the pool)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Quota:
    """What a region's vCPU quota leaves for more VMs of one size: Compute's usages (the total and the size's
    family) and the size's vCPUs (resource SKUs)."""

    size: str
    family: str
    vcpus: int  # per VM
    family_free: int
    family_limit: int
    regional_free: int
    regional_limit: int

    @classmethod
    def of(cls, size: str, family: str, vcpus: int, usage: dict[str, tuple[int, int]]) -> Quota:
        """From Compute's usages (lower-case usage name -> current value, limit): the family's and the regional
        total's ("cores")."""
        (fu, fl), (ru, rl) = usage.get(family.lower(), (0, 0)), usage.get("cores", (0, 0))
        return cls(size, family, vcpus, max(0, fl - fu), fl, max(0, rl - ru), rl)

    def fits(self) -> int:
        """How many more VMs of the size the quota takes."""
        return min(self.family_free, self.regional_free) // max(1, self.vcpus)

    def shortfall(self, vms: int) -> str | None:
        """Why ``vms`` more VMs would be refused (None: they fit)."""
        need = vms * self.vcpus
        for label, free, limit in ((f"{self.family} vCPUs", self.family_free, self.family_limit),
                                   ("total regional vCPUs", self.regional_free, self.regional_limit)):
            if need > free:
                return f"{vms} more {self.size} VM(s) need {need} {label}; {free} of {limit} are free"
        return None


@dataclass(frozen=True)
class ImageAvailability:
    """Whether an image can be put in a model in a region now: Compute lists the platform version there, or the
    gallery version is replicated there (``pending``: not yet, but replication there is under way)."""

    ready: bool
    said: str
    pending: bool = False

    @classmethod
    def platform(cls, image: ImageRef, location: str, published: bool, newest: str | None) -> ImageAvailability:
        """A platform version, as the region lists it (``newest``: what it has instead, said when it lacks it)."""
        if published:
            return cls(True, f"{image} is published in {location}")
        return cls(False, f"{image} is not published in {location}" + (f" (newest: {newest})" if newest else ""))
