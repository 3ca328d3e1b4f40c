"""The emulator's simulation as a ``Gateway`` in this process: no server, no TLS, no HTTP.

The rollout engine runs against it in unit tests (milliseconds a turn instead of a round trip
through the SDK and the wire) and in benches that want many rollouts. The state and behaviour are
the emulator's own (``World``); what is left out is only the transport, which the HTTPS tests
keep covering. Responses go through the same ARM shapes and the SDK's models as over HTTPS, so
the engine sees exactly the types it sees against the emulator or Azure.
"""

from __future__ import annotations

import copy
import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ParamSpec, TypeVar

from vmssctl import errors
from vmssctl.emulator import shapes
from vmssctl.emulator import world as w
from vmssctl.emulator.clock import SimClock
from vmssctl.emulator.errors import ArmError as EmulatorArmError
from vmssctl.emulator.server import demo_scale_set
from vmssctl.emulator.world import World
from vmssctl.gateway import Network
from vmssctl.model import ImageAvailability, ImageRef, Instance, Quota, RollingStatus, ScaleSet, id_key
from vmssctl.target import same_image

P = ParamSpec("P")
R = TypeVar("R")

LOCATION = "eastus"


def _as_vmssctl(e: EmulatorArmError) -> errors.ArmError:
    """What ``azure.translate`` makes of the same error arriving over HTTPS."""
    text = f"({e.code}) {e.message}"
    if e.status == 404:
        return errors.NotFound(text, 404, e.code)
    if e.status == 412:
        return errors.PreconditionFailed(text, 412, e.code)
    if e.status == 409:
        return errors.Conflict(text, 409, e.code)
    return errors.ArmError(text, e.status, e.code)


def _call(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Count the call as one ARM request of kind ``name`` and raise vmssctl's errors, as the SDK seam does."""
    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
            gateway = args[0]
            gateway.requests[name] += 1  # type: ignore[attr-defined]
            try:
                return fn(*args, **kwargs)
            except EmulatorArmError as e:
                raise _as_vmssctl(e) from None
        return wrapped
    return wrap


class WorldClock:
    """The engine's clock on a frozen in-process world: sleeping advances the simulation."""

    simulated = True

    def __init__(self, world: World) -> None:
        self.world = world

    def now(self) -> float:
        return self.world.now()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.world.clock.advance(seconds)
            self.world.advance()

    def close(self) -> None:
        pass


def frozen_world(seed: int = 0) -> World:
    """A world whose clock moves only when advanced (time scale 0)."""
    return World(SimClock(scale=0), seed=seed)


def create_set(world: World, rg: str, name: str = "web", capacity: int = 10, settle: bool = True,
               **kwargs: object) -> None:
    """The demo scale set in ``rg`` (created with it), running once ``settle`` has let time pass."""
    world.resource_groups.put(rg, LOCATION)
    world.scale_sets.put(rg, name, demo_scale_set(capacity, **kwargs))  # type: ignore[arg-type]
    if settle:
        world.clock.advance(900)
        world.advance()


def _image(fragment: dict) -> ImageRef:
    ref = fragment.get("imageReference") or {}
    if ref.get("id"):
        return ImageRef(id=ref["id"])
    if ref.get("publisher"):
        return ImageRef(publisher=ref["publisher"], offer=ref.get("offer"), sku=ref.get("sku"),
                        version=ref.get("version"), exact_version=ref.get("exactVersion"))
    return ImageRef(uri=((fragment.get("osDisk") or {}).get("image") or {}).get("uri"))


def _instance(inst: w.Instance, model_digest: str, reports_health: bool) -> Instance:
    """What ``Instance.from_sdk`` reads from the same VM's ARM shape (instance view included)."""
    error = f"{inst.error['code']}: {inst.error['message']}" if inst.provisioning == "Failed" and inst.error \
        else None
    health = inst.health.lower() if inst.health and reports_health else None
    return Instance(
        instance_id=inst.external_id, update_domain=inst.ud, fault_domain=inst.fd, zone=inst.zone,
        power=inst.power, provisioning=inst.provisioning.lower(), health=health,
        latest_model=inst.profile == model_digest, image=_image(inst.image or {}), error=error,
        health_since=inst.changed if health else None,
        protected_from_scale_in=bool(inst.protection.get("protectFromScaleIn")),
        protected_from_actions=bool(inst.protection.get("protectFromScaleSetActions")))


def _storage(image: ImageRef) -> dict:
    if image.kind == "uri":
        return {"osDisk": {"image": {"uri": image.uri}}}
    if image.kind == "id":
        return {"imageReference": {"id": image.id}}
    return {"imageReference": {"publisher": image.publisher, "offer": image.offer, "sku": image.sku,
                               "version": image.version}}


class WorldGateway:
    """A ``gateway.Gateway`` on one scale set of an in-process ``World``; ``requests`` counts calls by kind."""

    def __init__(self, world: World, resource_group: str, name: str) -> None:
        self.world = world
        self.resource_group = resource_group
        self.name = name
        self.requests: Counter[str] = Counter()

    def _set(self):  # the world's own record of the set
        return self.world.scale_sets.get(self.resource_group, self.name)

    @_call("get")
    def get(self) -> ScaleSet:
        from vmssctl.azure import scale_set_from_json

        self.world.advance()
        return scale_set_from_json(shapes.scale_set(self.world, self._set()), self.resource_group)

    @_call("list")
    def instances(self) -> list[Instance]:
        """Read straight from the world's instances: building the SDK's models costs 1.4 ms a VM, which would
        make a 1,000-VM rollout here as slow as over HTTPS (``test_inprocess`` checks both readings agree)."""
        self.world.advance()
        ss = self._set()
        reports_health, digest = ss.health_grace() is not None, ss.profile_digest
        out = [_instance(i, digest, reports_health) for i in ss.instances.values()]  # deleting ones too, as listed
        if ss.flexible:  # as the HTTPS path reads a Flexible set: VMs by name, latest model = the model's image
            model = self.get()
            out = [replace(i, latest_model=same_image(i.image, model.image), update_domain=None) for i in out]
        return sorted(out, key=lambda i: id_key(i.instance_id))

    @_call("summary")
    def busy_count(self) -> int:
        self.world.advance()
        summary = shapes.set_instance_view(self.world, self._set())["virtualMachine"]["statusesSummary"]
        return sum(s["count"] for s in summary if s["code"].lower() in (
            "provisioningstate/updating", "provisioningstate/creating", "provisioningstate/deleting"))

    @_call("update")
    def update(self, etag: str | None, image: ImageRef | None = None, tags: dict | None = None) -> None:
        body: dict = {}
        if tags is not None:
            body["tags"] = tags
        if image is not None:
            body["properties"] = {"virtualMachineProfile": {"storageProfile": _storage(image)}}
        self.world.scale_sets.patch(self.resource_group, self.name, body, if_match=etag)

    @_call("versions")
    def newest_version(self, location: str, image: ImageRef) -> str | None:
        versions = self.image_versions(location, image)
        return versions[-1] if versions else None

    def image_versions(self, location: str, image: ImageRef) -> list[str]:
        return self.world.catalog.versions(image.publisher or "", image.offer or "", image.sku or "", location)

    def image_availability(self, location: str, image: ImageRef) -> ImageAvailability | None:
        """As ``ScaleSetApi`` reads it, from the world's catalogue and galleries (the gallery version through
        the SDK's model, so both read it with the same code)."""
        from vmssctl.azure import gallery_availability_of
        from vmssctl.emulator.errors import ArmError

        if image.exact_platform:
            published = self.world.catalog.available(image.publisher or "", image.offer or "", image.sku or "",
                                                     image.version or "", location)
            return ImageAvailability.platform(image, location, published,
                                              None if published else self.newest_version(location, image))
        if image.gallery_version is None:
            return None
        _, gallery, definition, version = image.gallery_version
        try:
            found = self.world.galleries.render(image.id or "", expand=True)
        except ArmError:
            return ImageAvailability(False, f"gallery image version {version} of {gallery}/{definition} does not "
                                            "exist")
        return gallery_availability_of(found, location, f"{gallery}/{definition} {version}")

    def quota(self, location: str, size: str) -> Quota | None:
        from vmssctl.emulator.resources.quota import SIZES

        known = SIZES.get(size.lower())
        if known is None:
            return None
        sub = self.world.scale_sets.subscription_of(self.world.scale_sets.get(self.resource_group, self.name))
        usage = {u["name"]["value"].lower(): (u["currentValue"], u["limit"])
                 for u in self.world.quotas.usages(sub, location)}
        return Quota.of(size, known[0], known[2], usage)

    @_call("manualupgrade")
    def upgrade(self, ids: list[str]) -> None:
        self.world.vms.act(self.resource_group, self.name, "manualupgrade", ids)

    @_call("write")
    def set_gateway_pools(self, ids: list[str], member: bool) -> None:
        import copy

        ss = self.world.scale_sets.get(self.resource_group, self.name)
        nics = copy.deepcopy((ss.vm_profile.get("networkProfile") or {}).get("networkInterfaceConfigurations") or [])
        if not member:
            for nic in nics:
                for ipc in (nic.get("properties") or {}).get("ipConfigurations") or []:
                    (ipc.get("properties") or {}).pop("applicationGatewayBackendAddressPools", None)
        for iid in ids:
            self.world.vms.update(self.resource_group, self.name, iid, {"properties": {
                "networkProfileConfiguration": {"networkInterfaceConfigurations": nics}}}, None, None)

    @_call("reimage")
    def reimage(self, ids: list[str]) -> None:
        self.world.vms.act(self.resource_group, self.name, "reimage", ids)

    @_call("scale")
    def set_capacity(self, capacity: int) -> None:
        self.world.scale_sets.patch(self.resource_group, self.name, {"sku": {"capacity": capacity}})

    @_call("delete")
    def delete(self, ids: list[str]) -> None:
        self.world.vms.act(self.resource_group, self.name, "delete", ids)

    @_call("rolling")
    def rolling_status(self) -> RollingStatus | None:
        from vmssctl.azure import rolling_status_from_arm

        try:
            ss, ru = self.world.rolling_upgrades.latest(self.resource_group, self.name)
        except EmulatorArmError as e:
            if e.status == 404 and e.code == "NotFound":
                return None
            raise
        return rolling_status_from_arm(shapes.rolling_status(self.world, ss, ru))

    @_call("cancel")
    def cancel_rolling(self) -> None:
        self.world.rolling_upgrades.cancel(self.resource_group, self.name)

    def for_set(self, name: str) -> WorldGateway:
        other = WorldGateway(self.world, self.resource_group, name)
        other.requests = self.requests  # one count of the rollout's requests
        return other

    @_call("create")
    def clone(self, name: str, image: ImageRef, capacity: int, tags: dict[str, str]) -> None:
        body = copy.deepcopy(shapes.scale_set(self.world, self._set()))
        body["sku"]["capacity"] = capacity
        body["tags"] = {**(body.get("tags") or {}), **tags}
        storage = body["properties"]["virtualMachineProfile"]["storageProfile"]
        if image.kind == "uri":
            storage.setdefault("osDisk", {})["image"] = {"uri": image.uri}
        else:
            storage["imageReference"] = _storage(image)["imageReference"]
        self.world.scale_sets.put(self.resource_group, name, body, if_none_match="*")

    @_call("delete_set")
    def delete_set(self) -> None:
        self.world.scale_sets.delete(self.resource_group, self.name)

    def network(self) -> Network:
        return world_network(self.world)


def _as_sdk(name: str, answer: Callable[[], dict]) -> Any:
    """What the world answers, as azure-mgmt-network's model ``name`` (its refusals as vmssctl's errors, as the SDK
    gateway raises them): the in-process network client reads the world with the very code that reads HTTPS."""
    from vmssctl.azure import network_model

    try:
        return network_model(name, answer())
    except EmulatorArmError as e:
        raise _as_vmssctl(e) from None


class _LoadBalancers:
    """The world's load balancers as azure-mgmt-network's client answers (its own models)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def get(self, resource_group: str, name: str) -> object:
        lbs = self.world.load_balancers
        return _as_sdk("LoadBalancer", lambda: lbs.render(lbs.get(resource_group, name)))

    def begin_health(self, resource_group: str, name: str, rule: str) -> object:
        lbs = self.world.load_balancers
        return _Done(_as_sdk("LoadBalancerHealthPerRule",
                             lambda: lbs.rule_health(lbs.get(resource_group, name), rule)))


@dataclass(frozen=True)
class _Done:
    value: object

    def result(self) -> object:
        return self.value


class _Pools:
    """A load balancer's backend pools as the SDK's client reads and writes them."""

    def __init__(self, world: World) -> None:
        self.world = world

    def get(self, resource_group: str, name: str, pool: str) -> object:
        lbs = self.world.load_balancers
        return _as_sdk("BackendAddressPool",
                       lambda: lbs.render_child(lbs.get(resource_group, name), "backendAddressPools", pool))

    def begin_create_or_update(self, resource_group: str, name: str, pool: str, model: Any,
                               headers: dict | None = None) -> object:
        try:
            self.world.load_balancers.put_pool(resource_group, name, pool, model.as_dict(),
                                               (headers or {}).get("If-Match"))
        except EmulatorArmError as e:
            raise _as_vmssctl(e) from None
        return _Done(self.get(resource_group, name, pool))


class _AppGateways:
    """Application Gateways as the SDK's client reads them (and their backend health)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def get(self, resource_group: str, name: str) -> object:
        gws = self.world.app_gateways
        return _as_sdk("ApplicationGateway", lambda: gws.render(gws.get(resource_group, name)))

    def begin_backend_health(self, resource_group: str, name: str) -> object:
        gws = self.world.app_gateways
        return _Done(_as_sdk("ApplicationGatewayBackendHealth",
                             lambda: gws.backend_health(gws.get(resource_group, name))))


class _NetworkClient:
    def __init__(self, world: World) -> None:
        self.load_balancers = self.load_balancer_load_balancing_rules = _LoadBalancers(world)
        self.load_balancer_backend_address_pools = _Pools(world)
        self.application_gateways = _AppGateways(world)


def world_network(world: World) -> Network:
    """A ``gateway.Network`` on an in-process ``World``: the SDK gateway's code on the world's answers."""
    from vmssctl.azure import NetworkApi

    return NetworkApi(_NetworkClient(world))
