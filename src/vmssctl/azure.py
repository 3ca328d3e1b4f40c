"""The one seam to Azure Resource Manager: everything else asks this module for a client.

Real Azure is reached with ``DefaultAzureCredential``; the emulator with its endpoint,
CA certificate and token. Either way it is the official SDK underneath, configured
rather than wrapped: its retry policy honours ``Retry-After`` and its LRO poller
follows ``Azure-AsyncOperation``.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from azure.core.credentials import AccessToken
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.mgmt.compute import ComputeManagementClient

from vmssctl import inputs
from vmssctl.errors import (
    ArmError,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    Unreachable,
    UsageError,
    VmssctlError,
)

if TYPE_CHECKING:
    from vmssctl.model import Backend, ImageAvailability, ImageRef, Quota, ScaleSet

P = ParamSpec("P")
R = TypeVar("R")


def one_line(e: BaseException) -> str:
    """An ARM/SDK error as one line: ``(Code) message`` when ARM said so, else the first line of the text."""
    err = getattr(e, "error", None)
    if err is not None and getattr(err, "code", None):
        return f"({err.code}) {err.message}"
    text = str(e).strip().splitlines()
    return text[0] if text else e.__class__.__name__


def translate(e: BaseException) -> ArmError:
    """The SDK's exception as vmssctl's own: the only place that knows azure-core's exception types."""
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        DecodeError,
        DeserializationError,
        HttpResponseError,
        ResourceModifiedError,
        ResourceNotFoundError,
        ServiceRequestError,
    )

    status = getattr(e, "status_code", None)
    code = getattr(getattr(e, "error", None), "code", None)
    text = one_line(e)[:500]
    if isinstance(e, ResourceNotFoundError):
        return NotFound(text, 404, code)
    if isinstance(e, ClientAuthenticationError):
        return ArmError(f"authentication failed: {text}", status or 401, code)
    if isinstance(e, ResourceModifiedError) or status == 412:
        return PreconditionFailed(text, 412, code)
    if isinstance(e, DecodeError | DeserializationError):
        return ArmError(f"ARM sent a response the Azure SDK cannot read: {text[:300]}", status, code)
    if isinstance(e, HttpResponseError) and status == 403:
        return Forbidden(text, status, code)
    if isinstance(e, HttpResponseError):
        return (Conflict if status == 409 else ArmError)(text, status, code)
    if isinstance(e, ServiceRequestError):
        return Unreachable(f"cannot reach the ARM endpoint: {text}", None, code)
    if isinstance(e, AzureError):  # e.g. the connection dropped mid-response, after the SDK's retries
        return ArmError(f"ARM call failed: {text}", status, code)
    return ArmError(f"Azure SDK error: {e.__class__.__name__}: {text[:300]}", status, code)


def _arm(fn: Callable[P, R]) -> Callable[P, R]:
    """Run an SDK call, raising vmssctl's errors instead of the SDK's (pagers included: lists are read whole)."""
    @functools.wraps(fn)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except VmssctlError:
            raise
        except Exception as e:
            if e.__class__.__module__.startswith(("azure.", "msrest", "requests", "urllib3")):
                raise translate(e) from None
            raise
    return wrapped


class Operation:
    """A long-running ARM operation in flight (the SDK's poller, kept inside this module)."""

    def __init__(self, poller: object, what: str) -> None:
        self._poller = poller
        self.what = what

    @_arm
    def wait(self) -> None:
        """Block until ARM's verdict; raises ArmError when the operation failed."""
        self._poller.result()  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Connection:
    subscription: str
    endpoint: str | None = None  # None = real Azure
    ca: str | None = None
    token: str | None = None
    emulator_dir: str | None = None  # set when it came from --emulator DIR

    @property
    def is_emulator(self) -> bool:
        return self.endpoint is not None

    def to_json(self) -> dict:
        """How to connect again (what ``rollout resume`` needs), never the token."""
        if self.emulator_dir:
            return {"emulator": self.emulator_dir, "subscription": self.subscription}
        return {k: v for k, v in (("endpoint", self.endpoint), ("ca", self.ca), ("subscription", self.subscription))
                if v}


def connection_from_json(stored: dict) -> Connection:
    """Connect again as ``Connection.to_json`` recorded (the token comes from the emulator or the environment)."""
    return resolve_connection(stored.get("emulator"), stored.get("endpoint"), stored.get("ca"),
                              stored.get("subscription"))


class StaticToken:
    """Credential for the emulator: it accepts the token from its emulator.json."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: object = None):  # azure-core >= 1.31 prefers this
        from azure.core.credentials import AccessTokenInfo

        return AccessTokenInfo(self._token, int(time.time()) + 3600)

    def close(self) -> None:
        pass


def read_emulator_info(state_dir: str | Path) -> dict:
    path = Path(state_dir) / "emulator.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"no emulator.json in {state_dir}: start one with 'vmssctl emulator --state-dir "
                         f"{state_dir}'") from None
    except ValueError:
        raise UsageError(f"{path} is not valid JSON") from None


def resolve_connection(emulator: str | None = None, endpoint: str | None = None, ca: str | None = None,
                       subscription: str | None = None) -> Connection:
    """Flags first, then VMSSCTL_* variables, then real Azure."""
    env = os.environ
    if emulator:
        info = read_emulator_info(emulator)
        try:
            return Connection(subscription or info["subscription"], info["endpoint"], info["ca"], info["token"],
                              emulator_dir=str(Path(emulator).resolve()))
        except (KeyError, TypeError):
            raise UsageError(f"{Path(emulator) / 'emulator.json'} is not an emulator's emulator.json") from None
    endpoint = endpoint or env.get("VMSSCTL_ENDPOINT")
    if endpoint:
        if not endpoint.startswith("https://"):
            raise UsageError(f"endpoint '{endpoint}' must be https:// (ARM clients refuse plain http)")
        ca = ca or env.get("VMSSCTL_CA")
        sub = subscription or env.get("AZURE_SUBSCRIPTION_ID")
        if not sub:
            raise UsageError("with --endpoint, pass --subscription or set AZURE_SUBSCRIPTION_ID")
        sub = inputs.subscription(sub, "AZURE_SUBSCRIPTION_ID")
        # VMSSCTL_TOKEN: a static bearer (the emulator's); without it, DefaultAzureCredential as for Azure
        return Connection(sub, endpoint.rstrip("/"), ca, env.get("VMSSCTL_TOKEN"))
    sub = subscription or env.get("AZURE_SUBSCRIPTION_ID")
    if not sub:
        raise UsageError("no subscription: pass --subscription or set AZURE_SUBSCRIPTION_ID "
                         "(or point at an emulator with --emulator DIR)")
    sub = inputs.subscription(sub, "AZURE_SUBSCRIPTION_ID")
    return Connection(sub)


class _Paced(SansIOHTTPPolicy):
    """An SDK pipeline policy (configured, not a re-implementation): each request first takes a token from its
    subscription's request budget (``vmssctl.budget``), which waits when the budget is spent."""

    def __init__(self, subscription: str, budget, pace: float = 1.0) -> None:
        self.subscription, self.budget, self.pace = subscription, budget, pace

    def on_request(self, request) -> None:
        from vmssctl.budget import WRITE_METHODS, bucket

        bucket(self.subscription, request.http_request.method.upper() in WRITE_METHODS, self.budget,
               self.pace).take()


def _credential(conn: Connection):
    if conn.token:
        return StaticToken(conn.token)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(**({"connection_verify": conn.ca} if conn.ca else {}))


def _endpoint(conn: Connection, kwargs: dict) -> dict:
    """The SDK's settings for the emulator (or another ARM endpoint): where, its CA, the scope of tokens."""
    if conn.endpoint:
        if conn.ca:
            kwargs.setdefault("connection_verify", conn.ca)
        kwargs.setdefault("base_url", conn.endpoint)
        kwargs.setdefault("credential_scopes", ["https://management.azure.com/.default"])
    return kwargs


def _paced(conn: Connection, budget: Any, kwargs: dict) -> dict:
    """With a ``budget.Budget``, every request of the client is paced by the subscription's process-wide request
    budget (ARM counts Compute's, Network's and Authorization's requests against the same limits)."""
    if budget is not None:
        kwargs["per_call_policies"] = [*list(kwargs.get("per_call_policies") or []),
                                       _Paced(conn.subscription, budget, _pace(conn))]
    return kwargs


@functools.lru_cache(maxsize=16)
def _pace(conn: Connection) -> float:
    """ARM's seconds per real second: an emulator's time scale (its throttling counts simulated seconds, so a
    budget counted in real ones would be that many times too strict), 1 for Azure and a frozen emulator."""
    if not conn.is_emulator:
        return 1.0
    from vmssctl.emulator.admin import AdminClient

    try:
        return float(AdminClient(conn).clock().get("scale") or 0.0) or 1.0
    except (OSError, ValueError, VmssctlError):
        return 1.0


def compute_client(conn: Connection, budget: Any = None, **kwargs: Any) -> ComputeManagementClient:
    """A ComputeManagementClient for real Azure or the emulator; kwargs tune the SDK's policies. With a
    ``budget.Budget``, every request is paced by the subscription's process-wide request budget."""
    kwargs.setdefault("polling_interval", 5)
    client = ComputeManagementClient(_credential(conn), conn.subscription,
                                     **_endpoint(conn, _paced(conn, budget, kwargs)))
    _CONNECTIONS[client] = (conn, budget)  # so that a gateway on it reaches Network the same way, on the same budget
    return client


# client -> the Connection it was made for, and its budget
_CONNECTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@_arm
def list_subscriptions(conn: Connection) -> list[tuple[str, str]]:
    """(id, display name) of every subscription the connection's credential can see, the connection's own first
    (Microsoft.Resources' subscriptions list, through the SDK as for Compute)."""
    from azure.mgmt.resource.subscriptions import SubscriptionClient

    client = SubscriptionClient(_credential(conn), **_endpoint(conn, {}))
    try:
        found = [(s.subscription_id or "", s.display_name or s.subscription_id or "")
                 for s in client.subscriptions.list() if s.subscription_id]
    finally:
        client.close()
    mine = [f for f in found if f[0].lower() == conn.subscription.lower()]
    return mine + sorted((f for f in found if f[0].lower() != conn.subscription.lower()), key=lambda f: f[1].lower()) \
        if mine else [(conn.subscription, conn.subscription), *found]


def gallery_availability_of(body: dict, location: str, what: str) -> ImageAvailability:
    """The same from a gallery image version's ARM JSON (the emulator's in-process world answers with it): read
    through the SDK's model, so both paths read it with one function."""
    from azure.mgmt.compute.models import GalleryImageVersion

    return gallery_availability(GalleryImageVersion(body), location, what)


def gallery_availability(found: Any, location: str, what: str) -> ImageAvailability:
    """A gallery image version as the SDK reads it, in ``location``: replicated, replicating, or not a target."""
    from vmssctl.model import ImageAvailability

    region = location.lower().replace(" ", "")
    summary = {(s.region or "").lower().replace(" ", ""): s for s in
               getattr(getattr(found, "replication_status", None), "summary", None) or []}
    row = summary.get(region)
    if row is None:
        targets = [t.name for t in getattr(getattr(found, "publishing_profile", None), "target_regions", None) or []]
        return ImageAvailability(False, f"gallery image version {what} is not replicated to {location} (target "
                                        f"regions: {', '.join(targets) or 'none'}): add it to its target regions")
    state = str(getattr(row.state, "value", row.state) or "")
    if state.lower() == "completed":
        return ImageAvailability(True, f"gallery image version {what} is replicated to {location}")
    return ImageAvailability(False, f"gallery image version {what} is still replicating to {location} "
                                    f"({row.progress or 0} %)", pending=True)


def _pages(client: ComputeManagementClient, first: Any) -> Any:
    """Every item of an ARM list, read as JSON: the ``first`` request (the SDK's own request builder: its URL and
    api-version), then each ``nextLink``, through the client's own pipeline (``send_request``) and azure-core's
    pager; a refusal raises as the SDK's operations raise it (mapped by ``_arm`` like any other)."""
    from azure.core.paging import ItemPaged
    from azure.core.rest import HttpRequest

    def get_next(next_link: str | None = None) -> Any:
        return _send(client, HttpRequest("GET", next_link) if next_link else first)

    def extract(response: Any) -> tuple[str | None, Any]:
        import orjson  # (a page of 100 VMs decoded 5x faster than by the standard library)

        body = orjson.loads(response.content)
        return body.get("nextLink") or None, iter(body.get("value") or [])

    return ItemPaged(get_next, extract)


def _send(client: ComputeManagementClient, request: Any) -> Any:
    """One GET through the client's own pipeline, answered 200 (any other status raises as the SDK's operations
    raise it). Streamed, then read whole: the pipeline's ContentDecodePolicy would otherwise decode it too."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceExistsError,
        ResourceNotFoundError,
        ResourceNotModifiedError,
        map_error,
    )
    from azure.mgmt.core.exceptions import ARMErrorFormat

    response = client.send_request(request, stream=True)
    response.read()
    if response.status_code != 200:
        map_error(status_code=response.status_code, response=response,
                  error_map={401: ClientAuthenticationError, 404: ResourceNotFoundError, 409: ResourceExistsError,
                             304: ResourceNotModifiedError})
        raise HttpResponseError(response=response, error_format=ARMErrorFormat)
    return response


def scale_set_from_json(body: dict, resource_group: str):
    """A scale set's ARM JSON as vmssctl's ScaleSet: what ``ScaleSet.from_sdk`` reads of the SDK's models, read
    where it lies (building the models of a set cost more than the request that fetched it). The tests hold the
    two to the same answers."""
    from vmssctl.model import HEALTH_EXTENSIONS, ScaleSet, grace_period, unique_ids

    props = body.get("properties") or {}
    vmp = props.get("virtualMachineProfile") or {}
    sku = body.get("sku") or {}
    name: Any = body.get("name")  # (None where the body lacks it, as the SDK's model reads it)
    location: Any = body.get("location")
    size: Any = sku.get("name")
    policy = props.get("upgradePolicy") or {}
    rolling = policy.get("rollingUpgradePolicy") or {}
    health = [p for x in (vmp.get("extensionProfile") or {}).get("extensions") or []
              if ((p := x.get("properties") or {}).get("type") or "").lower() in HEALTH_EXTENSIONS]
    probe = (((vmp.get("networkProfile") or {}).get("healthProbe")) or {}).get("id")
    ipcs = [(c.get("properties") or {}) for nic in (vmp.get("networkProfile") or {}).get(
        "networkInterfaceConfigurations") or [] for c in (nic.get("properties") or {}).get("ipConfigurations") or []]
    return ScaleSet(
        resource_group=resource_group, name=name, location=location,
        capacity=sku.get("capacity") or 0, vm_size=size, image=image_from_json(vmp.get("storageProfile")),
        upgrade_mode=policy.get("mode") or "Manual", orchestration_mode=props.get("orchestrationMode") or "Uniform",
        provisioning_state=props.get("provisioningState") or "",
        fault_domains=props.get("platformFaultDomainCount") or 5, zones=tuple(body.get("zones") or ()),
        etag=body.get("etag"), tags=dict(body.get("tags") or {}),
        health_signal="Application Health extension" if health else "load balancer probe" if probe else None,
        health_grace=next((g for p in health if (g := grace_period(p.get("settings"))) is not None), None),
        rolling_batch_percent=rolling.get("maxBatchInstancePercent"), rolling_max_surge=bool(rolling.get("maxSurge")),
        lb_pools=unique_ids(p.get("id") for ipc in ipcs for p in ipc.get("loadBalancerBackendAddressPools") or []),
        gateway_pools=unique_ids(p.get("id") for ipc in ipcs
                                 for p in ipc.get("applicationGatewayBackendAddressPools") or []),
        subnets=unique_ids((ipc.get("subnet") or {}).get("id") for ipc in ipcs),
    )


def instance_from_json(body: dict):
    """A Uniform set's VM (with its instance view) as vmssctl's Instance, from its ARM JSON: what
    ``Instance.from_sdk`` reads of the SDK's model, read where it lies."""
    from vmssctl.model import Instance

    props = body.get("properties") or {}
    protection = props.get("protectionPolicy") or {}
    zones = body.get("zones")
    ud, fd, power, provisioning, health, error, since = _view_from_json(props.get("instanceView"),
                                                                        props.get("provisioningState"))
    return Instance(str(body.get("instanceId")), ud, fd, zones[0] if zones else None, power, provisioning, health,
                    bool(props.get("latestModelApplied")), image_from_json(props.get("storageProfile")), error,
                    since,
                    protected_from_scale_in=bool(protection.get("protectFromScaleIn")),
                    protected_from_actions=bool(protection.get("protectFromScaleSetActions")))


def vm_from_json(body: dict, model_image: Any):
    """A Flexible set's VM (``virtualMachines``, with its instance view), as ``Instance.from_vm`` reads it."""
    from vmssctl.model import Instance
    from vmssctl.target import same_image

    props = body.get("properties") or {}
    image = image_from_json(props.get("storageProfile"))
    _, fault_domain, power, provisioning, health, error, since = _view_from_json(
        props.get("instanceView"), props.get("provisioningState"))
    zones = body.get("zones")
    return Instance(str(body.get("name")), None, fault_domain, power=power, provisioning=provisioning,
                    health=health, error=error, health_since=since, zone=zones[0] if zones else None, image=image,
                    latest_model=same_image(image, model_image))


def image_from_json(storage: dict | None):
    """What ``ImageRef.from_storage_profile`` reads, from a storage profile's JSON."""
    from vmssctl.model import ImageRef

    ref = (storage or {}).get("imageReference")
    if ref and (ref.get("id") or ref.get("sharedGalleryImageId") or ref.get("communityGalleryImageId")):
        return ImageRef(id=ref.get("id") or ref.get("sharedGalleryImageId") or ref.get("communityGalleryImageId"))
    if ref and ref.get("publisher"):
        return _platform(ref["publisher"], ref.get("offer"), ref.get("sku"), ref.get("version"),
                         ref.get("exactVersion"))
    return ImageRef(uri=(((storage or {}).get("osDisk") or {}).get("image") or {}).get("uri"))


@functools.lru_cache(maxsize=256)  # (a listing's VMs run a few images: one ImageRef each)
def _platform(publisher: str, offer: str | None, sku: str | None, version: str | None, exact: str | None) -> Any:
    from vmssctl.model import ImageRef

    return ImageRef(publisher=publisher, offer=offer, sku=sku, version=version, exact_version=exact)


def _view_from_json(view: dict | None, provisioning_state: str | None) -> tuple:
    """What ``model._view`` reads of an instance view, from its JSON: (update domain, fault domain, power,
    provisioning, health, error, when the health last changed)."""
    power, provisioning = "unknown", (provisioning_state or "unknown").lower()
    health = error = since = None
    if not view:
        return None, None, power, provisioning, health, error, since
    for st in view.get("statuses") or ():
        code = st.get("code") or ""
        if code.startswith("PowerState/"):
            power = code[11:]
        elif code.startswith("ProvisioningState/"):
            parts = code.split("/")
            provisioning = parts[1]
            if parts[1] == "failed":
                error = f"{parts[2] if len(parts) > 2 else 'ProvisioningFailed'}: {st.get('message') or ''}".strip()
    status = (view.get("vmHealth") or {}).get("status")
    if status is not None:
        health = (status.get("code") or "").split("/", 1)[-1].lower() or "unknown"
        since = _epoch(status.get("time"))
    return (view.get("platformUpdateDomain"), view.get("platformFaultDomain"), power, provisioning, health, error,
            since)


@functools.lru_cache(maxsize=1 << 14)  # (a VM's health time stays the same from one listing to the next)
def _epoch(text: str | None) -> float | None:
    """An ARM timestamp (ISO 8601, up to 7 fractional digits, Z or an offset) as epoch seconds."""
    if not text:
        return None
    from datetime import datetime

    head, dot, rest = text.partition(".")
    if dot:  # at most 6 fractional digits for fromisoformat; the 7th (100 ns) goes
        digits = len(rest) - len(rest.lstrip("0123456789"))
        rest = rest[:min(digits, 6)] + rest[digits:]
        text = f"{head}.{rest}"
    when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def scale_set_from_arm(body: dict, resource_group: str):
    """A scale set's ARM JSON as vmssctl's ScaleSet, read by the SDK's own models (as over HTTPS)."""
    from azure.mgmt.compute import models as m

    from vmssctl.model import ScaleSet

    return ScaleSet.from_sdk(m.VirtualMachineScaleSet(body), resource_group)


def instance_from_arm(body: dict):
    """A scale-set VM's ARM JSON (with its instance view) as vmssctl's Instance, read by the SDK's models."""
    from azure.mgmt.compute import models as m

    from vmssctl.model import Instance

    return Instance.from_sdk(m.VirtualMachineScaleSetVM(body))


def network_model(name: str, body: dict) -> Any:
    """A Network body (ARM JSON) as azure-mgmt-network's model ``name``, as the SDK reads it over HTTPS."""
    from azure.mgmt.network import models as nm

    return getattr(nm, name)(body)


def rolling_status_from_arm(body: dict):
    """A ``rollingUpgrades/latest`` body as vmssctl's RollingStatus, read by the SDK's model."""
    from azure.mgmt.compute import models as m

    from vmssctl.model import RollingStatus

    return RollingStatus.from_sdk(m.RollingUpgradeStatusInfo(body))


class ScaleSetApi:
    """The handful of ARM calls vmssctl makes on one scale set, in vmssctl's own types (a ``gateway.Gateway``)."""

    def __init__(self, client: ComputeManagementClient, resource_group: str, name: str) -> None:
        self.client = client
        self.resource_group = resource_group
        self.name = name
        self._flexible: bool | None = None
        self._network: NetworkApi | None = None

    @_arm
    def get(self):
        """The set's model, read as JSON (``scale_set_from_json``) from the SDK's own request, through its
        pipeline: the SDK's models of a set cost 2.5 ms of CPU a read, and an engine reads its set most turns."""
        import orjson
        from azure.mgmt.compute.operations import _operations as requests

        request = requests.build_virtual_machine_scale_sets_get_request(
            self.resource_group, self.name, self.client._config.subscription_id)
        ss = scale_set_from_json(orjson.loads(_send(self.client, request).content), self.resource_group)
        self._flexible = ss.orchestration_mode.lower() == "flexible"
        return ss

    @_arm
    def instances(self) -> list:
        """Every instance with its instance view, in id order: one listing (paged) for a Uniform set; for a Flexible
        set the model (which image is the latest) and its virtual machines, filtered to the set.

        The pages come through the SDK's pipeline (its credential, retries, throttling and logging policies) and
        azure-core's pager, but are read as the JSON they are: building the SDK's models of every VM cost 1.3 ms
        a VM, most of a rollout's CPU. ``instance_from_json`` reads what ``Instance.from_sdk`` reads of the
        models, and the tests hold the two to the same answers."""
        from azure.mgmt.compute.operations import _operations as requests

        from vmssctl.model import id_key

        sub = self.client._config.subscription_id
        if self.flexible:
            model = self.get()
            set_id = (f"/subscriptions/{sub}/resourceGroups/{self.resource_group}/providers/Microsoft.Compute/"
                      f"virtualMachineScaleSets/{self.name}")
            named = _pages(self.client, requests.build_virtual_machines_list_request(
                self.resource_group, sub, filter=f"'virtualMachineScaleSet/id' eq '{set_id}'", expand="instanceView"))
            return sorted((vm_from_json(v, model.image) for v in named), key=lambda i: id_key(i.instance_id))
        vms = _pages(self.client, requests.build_virtual_machine_scale_set_vms_list_request(
            self.resource_group, self.name, sub, expand="instanceView"))
        return sorted((instance_from_json(v) for v in vms), key=lambda i: id_key(i.instance_id))

    @property
    def flexible(self) -> bool:
        """Is the set Flexible? (read once: orchestration mode never changes)"""
        if self._flexible is None:
            self._flexible = self.get().orchestration_mode.lower() == "flexible"
        return self._flexible

    @_arm
    def busy_count(self) -> int:
        """Instances with an operation in flight, from the set's instance-view summary: one request."""
        view = self.client.virtual_machine_scale_sets.get_instance_view(self.resource_group, self.name)
        summary = (view.virtual_machine.statuses_summary or []) if view.virtual_machine else []
        return sum(s.count or 0 for s in summary
                   if (s.code or "").lower() in ("provisioningstate/updating", "provisioningstate/creating",
                                                 "provisioningstate/deleting"))

    @_arm
    def update(self, etag: str | None, image=None, tags: dict | None = None) -> None:
        """PATCH the image and/or tags with If-Match on ``etag``; returns once ARM accepted it.

        The engine waits for the model by observing the scale set, not on the LRO poller.
        """
        from azure.core import MatchConditions
        from azure.mgmt.compute import models as m

        update = m.VirtualMachineScaleSetUpdate(tags=tags)
        if image is not None:
            if image.kind == "uri":
                storage = m.VirtualMachineScaleSetUpdateStorageProfile(
                    os_disk=m.VirtualMachineScaleSetUpdateOSDisk(image=m.VirtualHardDisk(uri=image.uri)))
            else:
                storage = m.VirtualMachineScaleSetUpdateStorageProfile(image_reference=_image_reference(image))
            update.virtual_machine_profile = m.VirtualMachineScaleSetUpdateVMProfile(storage_profile=storage)
        kwargs: dict[str, Any] = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
        self.client.virtual_machine_scale_sets.begin_update(self.resource_group, self.name, update, polling=False,
                                                            **kwargs)

    @_arm
    def newest_version(self, location: str, image) -> str | None:
        """The highest published version of a platform image SKU (what 'latest' means today)."""
        versions = self.image_versions(location, image)
        return versions[-1] if versions else None

    @_arm
    def image_versions(self, location: str, image) -> list[str]:
        """The published versions of a platform image SKU in a region, oldest first."""
        versions = [v.name for v in self.client.virtual_machine_images.list(location, image.publisher, image.offer,
                                                                            image.sku)]
        numeric = [v for v in versions if all(p.isdigit() for p in v.split("."))]
        return sorted(numeric, key=lambda v: tuple(int(p) for p in v.split(".")))

    @_arm
    def image_availability(self, location: str, image: ImageRef) -> ImageAvailability | None:
        """A platform version: does Compute list it in the region (one GET)? A gallery image version: is it
        replicated there (one GET with its replication status)?"""
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        from vmssctl.model import ImageAvailability

        if image.exact_platform:
            try:
                self.client.virtual_machine_images.get(location, image.publisher or "", image.offer or "",
                                                       image.sku or "", image.version or "")
            except ResourceNotFoundError:
                return ImageAvailability.platform(image, location, False, self.newest_version(location, image))
            return ImageAvailability.platform(image, location, True, None)
        if image.gallery_version is None:
            return None
        rg, gallery, definition, version = image.gallery_version
        try:
            found = self.client.gallery_image_versions.get(rg, gallery, definition, version,
                                                           expand="ReplicationStatus")
        except ResourceNotFoundError:
            return ImageAvailability(False, f"gallery image version {version} of {gallery}/{definition} does not "
                                            "exist")
        except HttpResponseError:
            return None  # (another subscription's gallery, or no permission to read it: not checked)
        return gallery_availability(found, location, f"{gallery}/{definition} {version}")

    @_arm
    def quota(self, location: str, size: str) -> Quota | None:
        """The size's family and vCPUs (resource SKUs, filtered to the region) and the region's usages."""
        from vmssctl.model import Quota

        sku = next((k for k in self.client.resource_skus.list(filter=f"location eq '{location}'")
                    if (k.resource_type or "").lower() == "virtualmachines" and (k.name or "").lower() == size.lower()),
                   None)
        if sku is None or not sku.family:
            return None
        vcpus = next((int(str(c.value)) for c in sku.capabilities or [] if c.name == "vCPUs" and
                      str(c.value).isdigit()), 0)
        usage = {(u.name.value or "").lower(): (u.current_value, u.limit) for u in self.client.usage.list(location)
                 if u.name is not None}
        return Quota.of(size, sku.family, vcpus, usage)

    @_arm
    def reimage(self, ids: list[str]) -> None:
        """Reimage: how a VM already on a 'latest' model picks up a newer published version."""
        from azure.mgmt.compute import models as m

        self.client.virtual_machine_scale_sets.begin_reimage(
            self.resource_group, self.name, vm_scale_set_reimage_input=m.VirtualMachineScaleSetReimageParameters(
                instance_ids=ids), polling=False)

    @_arm
    def set_gateway_pools(self, ids: list[str], member: bool) -> None:
        """Each VM's own network configuration: the model's, without its Application Gateway pools (``member``
        False) or with them; one PUT a VM, If-Match on the etag just read, not awaited (the next turn sees from
        the gateway's pool whether it landed, and writes again if not)."""
        import copy

        from azure.core import MatchConditions
        from azure.mgmt.compute import models as m

        vmss = self.client.virtual_machine_scale_sets.get(self.resource_group, self.name)
        nics = copy.deepcopy(vmss.virtual_machine_profile.network_profile.network_interface_configurations or [])
        if not member:
            for nic in nics:
                for ipc in nic.ip_configurations or []:
                    ipc.application_gateway_backend_address_pools = []
        ops = self.client.virtual_machine_scale_set_vms
        for iid in ids:
            vm = ops.get(self.resource_group, self.name, iid)
            vm.network_profile_configuration = m.VirtualMachineScaleSetVMNetworkProfileConfiguration(
                network_interface_configurations=nics)
            ops.begin_update(self.resource_group, self.name, iid, vm, etag=vm.etag,
                             match_condition=MatchConditions.IfNotModified, polling=False)

    @_arm
    def upgrade(self, ids: list[str]) -> None:
        """One manualupgrade call for a whole batch."""
        from azure.mgmt.compute import models as m

        self.client.virtual_machine_scale_sets.begin_update_instances(
            self.resource_group, self.name, m.VirtualMachineScaleSetVMInstanceRequiredIDs(instance_ids=ids),
            polling=False)

    @_arm
    def set_capacity(self, capacity: int) -> None:
        """PATCH ``sku.capacity`` alone (a surge adds VMs on the latest model); the engine watches the result."""
        from azure.mgmt.compute import models as m

        self.client.virtual_machine_scale_sets.begin_update(
            self.resource_group, self.name, m.VirtualMachineScaleSetUpdate(sku=m.Sku(capacity=capacity)),
            polling=False)

    @_arm
    def delete(self, ids: list[str]) -> None:
        """Delete these instances (the set's capacity drops by as many); the engine watches them go."""
        from azure.mgmt.compute import models as m

        self.client.virtual_machine_scale_sets.begin_delete_instances(
            self.resource_group, self.name, m.VirtualMachineScaleSetVMInstanceRequiredIDs(instance_ids=ids),
            polling=False)

    @_arm
    def rolling_status(self):
        """Azure's latest rolling upgrade of the set, or None when it never had one (ARM answers 404)."""
        from vmssctl.model import RollingStatus

        try:
            return RollingStatus.from_sdk(self.client.virtual_machine_scale_set_rolling_upgrades.get_latest(
                self.resource_group, self.name))
        except Exception as e:  # the SDK's 404 is ResourceNotFoundError: no rolling upgrade yet
            if getattr(e, "status_code", None) == 404:
                return None
            raise

    @_arm
    def cancel_rolling(self) -> None:
        self.client.virtual_machine_scale_set_rolling_upgrades.begin_cancel(self.resource_group, self.name,
                                                                            polling=False)

    def for_set(self, name: str) -> ScaleSetApi:
        other = ScaleSetApi(self.client, self.resource_group, name)
        other._network = self._network
        return other

    def network(self) -> NetworkApi | None:
        """A Network gateway on the connection (and budget) this client was made for (compute_client records
        them)."""
        if self._network is None:
            made = _CONNECTIONS.get(self.client)
            self._network = network_api(*made) if made is not None else None
        return self._network

    @_arm
    def clone(self, name: str, image: ImageRef, capacity: int, tags: dict[str, str]) -> None:
        """PUT scale set ``name`` with this one's model (every profile, zones, identity, plan), ``image``,
        ``capacity`` and the tags, If-None-Match: *; returns once ARM accepted it (the set is observed, not
        awaited)."""
        from azure.core import MatchConditions
        from azure.mgmt.compute import models as m

        ops = self.client.virtual_machine_scale_sets
        blue = ops.get(self.resource_group, self.name)
        props: Any = blue.properties  # (a set's model always has its profile)
        storage = props.virtual_machine_profile.storage_profile
        if image.kind == "uri":
            storage.os_disk.image = m.VirtualHardDisk(uri=image.uri)
        else:
            storage.image_reference = _image_reference(image)
        sku = blue.sku or m.Sku()
        green = m.VirtualMachineScaleSet(
            location=blue.location, sku=m.Sku(name=sku.name, tier=sku.tier, capacity=capacity),
            tags={**(blue.tags or {}), **tags}, zones=blue.zones, identity=blue.identity, plan=blue.plan,
            extended_location=blue.extended_location, properties=props)
        ops.begin_create_or_update(self.resource_group, name, green, match_condition=MatchConditions.IfMissing,
                                   polling=False)

    @_arm
    def delete_set(self) -> None:
        self.client.virtual_machine_scale_sets.begin_delete(self.resource_group, self.name, polling=False)

    ACTIONS = ("upgrade", "reimage", "restart", "start", "poweroff", "deallocate", "delete")

    @_arm
    def act(self, action: str, ids: list[str] | None) -> Operation:
        """Start an instance action; ``wait()`` on the result gives ARM's verdict."""
        from azure.mgmt.compute import models as m

        ops = self.client.virtual_machine_scale_sets
        rg, name = self.resource_group, self.name
        what = f"{action} of " + (f"instance(s) {', '.join(ids[:20])}" if ids else "every instance")
        if action == "upgrade":
            return Operation(ops.begin_update_instances(rg, name, m.VirtualMachineScaleSetVMInstanceRequiredIDs(
                instance_ids=ids or ["*"])), what)
        if action == "delete":
            return Operation(ops.begin_delete_instances(rg, name, m.VirtualMachineScaleSetVMInstanceRequiredIDs(
                instance_ids=ids or ["*"])), what)
        if action == "reimage":
            return Operation(ops.begin_reimage(rg, name, vm_scale_set_reimage_input=(
                m.VirtualMachineScaleSetReimageParameters(instance_ids=ids) if ids else None)), what)
        begin: Any = {"restart": ops.begin_restart, "start": ops.begin_start, "poweroff": ops.begin_power_off,
                 "deallocate": ops.begin_deallocate}[action]
        return Operation(begin(rg, name, vm_instance_i_ds=m.VirtualMachineScaleSetVMInstanceIDs(instance_ids=ids)
                               if ids else None), what)

    @_arm
    def resize(self, capacity: int | None = None, vm_size: str | None = None) -> Operation:
        """PATCH ``sku`` (capacity and/or VM size); ``wait()`` on the result gives ARM's verdict."""
        from azure.mgmt.compute import models as m

        current = self.client.virtual_machine_scale_sets.get(self.resource_group, self.name).sku or m.Sku()
        sku = m.Sku(name=vm_size or current.name, tier=current.tier,
                    capacity=current.capacity if capacity is None else capacity)
        what = "; ".join(x for x in (f"scale to {capacity}" if capacity is not None else "",
                                     f"VM size -> {vm_size}" if vm_size else "") if x)
        return Operation(self.client.virtual_machine_scale_sets.begin_update(
            self.resource_group, self.name, m.VirtualMachineScaleSetUpdate(sku=sku)), what)

    def close(self) -> None:
        self.client.close()
        if self._network is not None:
            self._network.close()


def _image_reference(image: ImageRef) -> Any:
    """The SDK's ImageReference for a gallery/custom image id or a platform image."""
    from azure.mgmt.compute import models as m

    if image.kind == "id":
        return m.ImageReference(id=image.id)
    return m.ImageReference(publisher=image.publisher, offer=image.offer, sku=image.sku, version=image.version)


def network_client(conn: Connection, budget: Any = None, **kwargs: Any) -> Any:
    """A NetworkManagementClient (azure-mgmt-network) on the same credential, endpoint and budget as Compute's.
    Its long-running reads (a rule's health) are polled by the SDK: every 2 s on Azure, 0.1 s on the emulator."""
    from azure.mgmt.network import NetworkManagementClient

    kwargs.setdefault("polling_interval", 0.1 if conn.is_emulator else 2)
    return NetworkManagementClient(_credential(conn), conn.subscription,
                                   **_endpoint(conn, _paced(conn, budget, kwargs)))


def authorization_client(conn: Connection, budget: Any = None, **kwargs: Any) -> Any:
    """An AuthorizationManagementClient (azure-mgmt-authorization): what the credential may do, asked without
    trying (the permissions API)."""
    from azure.mgmt.authorization import AuthorizationManagementClient

    return AuthorizationManagementClient(_credential(conn), conn.subscription,
                                         **_endpoint(conn, _paced(conn, budget, kwargs)))


def network_api(conn: Connection, budget: Any = None) -> NetworkApi:
    """The Network gateway on this connection (and budget), able to say what the credential may not do there."""
    return NetworkApi(network_client(conn, budget), authorization_client(conn, budget))


class NetworkApi:
    """Microsoft.Network as vmssctl reads it (a ``gateway.Network``): the load balancers in front of a set.
    ``authorization``: a client of the permissions API (None: what may be done is learnt by doing it)."""

    def __init__(self, client: Any, authorization: Any = None) -> None:
        self.client = client
        self.authorization = authorization

    def close(self) -> None:
        for c in (self.client, self.authorization):
            close = getattr(c, "close", None)
            if close is not None:
                close()

    @_arm
    def refused(self, model: ScaleSet, actions: tuple[str, ...]) -> list[str]:
        """Which of ``actions`` the credential may not do on the set's load balancers (``action on rg/lb``), as
        the permissions API says (the role assignments' actions less their notActions; wildcards as RBAC reads
        them). Nothing is tried."""
        out = []
        for rg, name in sorted(_pools_by_lb(model.lb_pools)):
            # (None: the permissions API itself unavailable: unknown, not refused; what is missing then shows at
            # the first read or write, before the batch is disrupted)
            out += [f"{action} on {rg}/{name}" for action in
                    self.refused_on(rg, "Microsoft.Network", "loadBalancers", name, actions) or []]
        return out

    def refused_on(self, rg: str, provider: str, kind: str, name: str | None,
                   actions: tuple[str, ...], parent: str = "") -> list[str] | None:
        """Which of ``actions`` the credential may not do on one resource (``name`` None: on its resource group;
        ``parent``: a child's parent, ``virtualNetworks/vnet`` for a subnet), as the permissions API says; None
        when it cannot say."""
        if self.authorization is None:
            return None
        from azure.core.exceptions import HttpResponseError

        try:
            perms = self.authorization.permissions
            grants = list(perms.list_for_resource_group(rg) if name is None else
                          perms.list_for_resource(rg, provider, parent, kind, name))
        except HttpResponseError:
            return None
        return [a for a in actions if not any(_grants(p, a) for p in grants)]

    def refused_joins(self, joins: list[tuple[str, str]]) -> list[str] | None:
        """Which (join action, resource id) pairs the credential may not do, as ``action on rg/resource``: a
        subnet asked on itself (roles are often granted there), a pool on its load balancer or gateway. None
        when the permissions API cannot say."""
        out: list[str] = []
        for action, rid in joins:
            parts = rid.strip("/").split("/")
            if len(parts) < 10 or parts[4].lower() != "providers":
                continue
            rg, provider = parts[3], parts[5]
            if parts[8].lower() == "subnets":  # .../virtualNetworks/V/subnets/S
                refused = self.refused_on(rg, provider, "subnets", parts[9], (action,), f"{parts[6]}/{parts[7]}")
                where = f"{rg}/{parts[7]}/{parts[9]}"
            else:  # a pool: asked on its load balancer or gateway
                refused = self.refused_on(rg, provider, parts[6], parts[7], (action,))
                where = f"{rg}/{parts[7]}"
            if refused is None:
                return None
            out += [f"{a} on {where}" for a in refused if f"{a} on {where}" not in out]
        return out

    @_arm
    def backends(self, model: ScaleSet, health: bool = True) -> list[Backend]:
        """Each load balancer named by the set's pools: its rules on those pools, each rule's health (one POST,
        polled by the SDK; with ``health`` False not asked: state Unknown, one GET a load balancer), each
        address's admin state; the set's VMs only."""
        from vmssctl.model import Backend

        out: list[Backend] = []
        for (rg, name), pools in _pools_by_lb(model.lb_pools).items():
            lb = self.client.load_balancers.get(rg, name)
            admin: dict[str, tuple[str, str]] = {}
            members: dict[str, list[str]] = {}  # pool id -> its addresses' NIC IP configurations
            for pool in lb.backend_address_pools or []:
                for addr in pool.load_balancer_backend_addresses or []:
                    ref = getattr(addr.network_interface_ip_configuration, "id", None) or ""
                    state = addr.admin_state
                    admin[ref.lower()] = (addr.name or "", str(getattr(state, "value", state) or "None"))
                    members.setdefault((pool.id or "").lower(), []).append(ref)
            for rule in lb.load_balancing_rules or []:
                pool_id = (getattr(rule.backend_address_pool, "id", None) or "").lower()
                if pool_id not in pools:
                    continue
                if health:
                    said = self.client.load_balancer_load_balancing_rules.begin_health(rg, name, rule.name).result()
                    rows = [(r.network_interface_ip_configuration_id or "", r.state or "Down", r.reason or "")
                            for r in said.load_balancer_backend_addresses or []]
                else:
                    rows = [(ref, "Unknown", "") for ref in members.get(pool_id, [])]
                for ref, up, reason in rows:
                    iid = _instance_of(ref, model)
                    if iid is None:
                        continue  # another set's VM in the same pool
                    address, state = admin.get(ref.lower(), ("", "None"))
                    out.append(Backend(f"{rg}/{name}", rule.name or "", pool_id.rsplit("/", 1)[-1], address, iid,
                                       up, reason, state, (getattr(rule.probe, "id", None) or "").rsplit("/", 1)[-1]))
        for (rg, name), pools in _pools_by_lb(model.gateway_pools, "applicationgateways").items():
            out += self._gateway_backends(model, rg, name, pools, health)
        return out

    def _gateway_backends(self, model: ScaleSet, rg: str, name: str, pools: set[str], health: bool) -> list[Backend]:
        """An Application Gateway's routing rules to the set's pools, each member Up (Healthy) or Down as its
        backend setting's probe says (``backendhealth``, an LRO; Unknown when not asked). No admin state."""
        from vmssctl.model import Backend

        gw = self.client.application_gateways.get(rg, name)
        probe_of = {(s.id or "").lower(): (getattr(s.probe, "id", None) or "").rsplit("/", 1)[-1]
                    for s in gw.backend_http_settings_collection or []}
        members = {(p.id or "").lower(): [c.id or "" for c in p.backend_ip_configurations or []]
                   for p in gw.backend_address_pools or []}
        said: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}  # (pool, setting) -> NIC ref -> (state, log)
        if health:
            result = self.client.application_gateways.begin_backend_health(rg, name).result()
            for p in result.backend_address_pools or []:
                for s in p.backend_http_settings_collection or []:
                    said[((p.backend_address_pool.id or "").lower(), (s.backend_http_settings.id or "").lower())] = {
                        (getattr(v.ip_configuration, "id", None) or "").lower():
                            ("Up" if str(getattr(v.health, "value", v.health)) == "Healthy" else "Down",
                             v.health_probe_log or "") for v in s.servers or []}
        out = []
        for rule in gw.request_routing_rules or []:
            pool_id = (getattr(rule.backend_address_pool, "id", None) or "").lower()
            setting = (getattr(rule.backend_http_settings, "id", None) or "").lower()
            if pool_id not in pools:
                continue
            for ref in members.get(pool_id, []):
                iid = _instance_of(ref, model)
                if iid is None:
                    continue
                unknown = ("Down" if health else "Unknown", "")
                up, reason = said.get((pool_id, setting), {}).get(ref.lower(), unknown)
                out.append(Backend(f"{rg}/{name}", rule.name or "", pool_id.rsplit("/", 1)[-1], "", iid, up, reason,
                                   "None", probe_of.get(setting, ""), gateway=True))
        return out

    @_arm
    def set_admin(self, model: ScaleSet, ids: list[str], state: str) -> None:
        """Each pool of the set read, the admin state of these VMs' addresses set (the others as they were), the
        pool written back; only pools where something changes."""
        wanted = set(ids)
        for (rg, name), pools in _pools_by_lb(model.lb_pools).items():
            for pool_id in sorted(pools):
                ops = self.client.load_balancer_backend_address_pools
                pool_name = pool_id.rsplit("/", 1)[-1]
                pool = ops.get(rg, name, pool_name)
                changed = False
                for addr in pool.load_balancer_backend_addresses or []:
                    ref = getattr(addr.network_interface_ip_configuration, "id", None) or ""
                    current = str(getattr(addr.admin_state, "value", addr.admin_state) or "None")
                    if _instance_of(ref, model) in wanted and current != state:
                        addr.admin_state, changed = state, True
                if changed:  # only over what was read: a change by someone else meanwhile is a 412, not lost
                    ops.begin_create_or_update(rg, name, pool_name, pool, headers={"If-Match": pool.etag}).result()


def _grants(permission: Any, action: str) -> bool:
    """Does one permission entry (a role's actions and notActions) allow ``action``?"""
    low = action.lower()
    return any(fnmatch.fnmatchcase(low, a.lower()) for a in permission.actions or []) and \
        not any(fnmatch.fnmatchcase(low, a.lower()) for a in permission.not_actions or [])


def _pools_by_lb(pool_ids: tuple[str, ...], kind: str = "loadbalancers") -> dict[tuple[str, str], set[str]]:
    """Backend pool ids grouped by their load balancer (or Application Gateway: ``kind``) (resource group,
    name); the ids lower-cased."""
    out: dict[tuple[str, str], set[str]] = {}
    for pid in pool_ids:
        parts = pid.split("/")
        low = [p.lower() for p in parts]
        if kind in low and "resourcegroups" in low:
            rg, name = parts[low.index("resourcegroups") + 1], parts[low.index(kind) + 1]
            out.setdefault((rg, name), set()).add(pid.lower())
    return out


def _instance_of(ip_configuration: str, model: ScaleSet) -> str | None:
    """The set's VM an IP configuration id belongs to: a Uniform VM's by its instance id; a Flexible VM's network
    interface is named after the VM (``{vm}-{nic}``)."""
    parts = ip_configuration.split("/")
    low = [p.lower() for p in parts]
    if "virtualmachinescalesets" in low and "virtualmachines" in low:
        i = low.index("virtualmachinescalesets")
        return parts[low.index("virtualmachines") + 1] if low[i + 1] == model.name.lower() else None
    if model.orchestration_mode.lower() == "flexible" and "networkinterfaces" in low:
        vm = parts[low.index("networkinterfaces") + 1].rsplit("-", 1)[0]
        return vm if vm.lower().startswith(f"{model.name.lower()}_") else None
    return None


def list_scale_sets(client: ComputeManagementClient) -> list[tuple[str, str, str]]:
    """(resource group, name, location) of every scale set in the subscription."""
    return [(r.resource_group, r.name, r.location) for r in list_set_refs(client)]


@_arm
def list_set_refs(client: ComputeManagementClient, subscription: str = "") -> list:
    """Every scale set of the client's subscription with its location and tags (what a fleet selects on)."""
    return [ref for ref, _ in list_set_models(client, subscription)]


@_arm
def list_set_models(client: ComputeManagementClient, subscription: str = "") -> list:
    """Every scale set of the client's subscription, as (SetRef, ScaleSet) from one listing (the ScaleSet None for
    a set without a VM profile: a Flexible set that has none yet)."""
    from vmssctl.fleet.spec import SetRef
    from vmssctl.model import ScaleSet

    out = []
    for vmss in client.virtual_machine_scale_sets.list_all():
        rg = vmss.id.split("/resourceGroups/")[1].split("/")[0] if vmss.id else ""
        model = ScaleSet.from_sdk(vmss, rg) if vmss.virtual_machine_profile is not None else None
        out.append((SetRef(rg, vmss.name or "", vmss.location or "", dict(vmss.tags or {}), subscription), model))
    return sorted(out, key=lambda x: (x[0].resource_group.lower(), x[0].name.lower()))
