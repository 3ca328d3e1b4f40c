"""What the rollout engine needs from Azure, in vmssctl's own types: the narrow seam it is written against.

Two implementations: ``azure.ScaleSetApi`` (the official SDK, for Azure and the emulator over
HTTPS) and ``emulator.inprocess.WorldGateway`` (the emulator's simulation called directly, no
HTTP, for fast in-process engine tests). Every method raises ``vmssctl.errors`` types only.
Writes return once ARM accepted them; the engine learns the outcome by observing, never by
blocking on a long-running operation.
"""

from __future__ import annotations

from typing import Protocol

from vmssctl.model import Backend, ImageAvailability, ImageRef, Instance, Quota, RollingStatus, ScaleSet


class Gateway(Protocol):
    resource_group: str
    name: str

    def get(self) -> ScaleSet:
        """The scale set's model (with its etag)."""
        ...

    def instances(self) -> list[Instance]:
        """Every instance with its instance view, sorted by id: one listing."""
        ...

    def busy_count(self) -> int:
        """How many instances have an operation in flight (the set's instance-view summary: one request)."""
        ...

    def update(self, etag: str | None, image: ImageRef | None = None, tags: dict | None = None) -> None:
        """Change the model's image and/or tags, If-Match on ``etag`` (PreconditionFailed when it moved)."""
        ...

    def newest_version(self, location: str, image: ImageRef) -> str | None:
        """The newest published version of a platform image (what 'latest' means today)."""
        ...

    def image_versions(self, location: str, image: ImageRef) -> list[str]:
        """The published versions of a platform image SKU in a region, oldest first."""
        ...

    def image_availability(self, location: str, image: ImageRef) -> ImageAvailability | None:
        """Can ``image`` be put in a model in ``location`` now (None: vmssctl cannot tell: a managed or shared
        image, 'latest', or a gallery it may not read)?"""
        ...

    def quota(self, location: str, size: str) -> Quota | None:
        """What the region's vCPU quota leaves for more VMs of ``size`` (None: a size Compute does not list)."""
        ...

    def upgrade(self, ids: list[str]) -> None:
        """manualupgrade: bring these instances to the latest model."""
        ...

    def reimage(self, ids: list[str]) -> None:
        """Reimage: how an instance on a 'latest' model picks up a newer published version."""
        ...

    def set_capacity(self, capacity: int) -> None:
        """Change ``sku.capacity`` alone (new instances come up on the latest model)."""
        ...

    def delete(self, ids: list[str]) -> None:
        """Delete these instances (the capacity drops by as many)."""
        ...

    def rolling_status(self) -> RollingStatus | None:
        """Azure's latest rolling upgrade of the set (None: it never had one)."""
        ...

    def cancel_rolling(self) -> None:
        """Cancel Azure's rolling upgrade in progress (instances in flight finish their upgrade)."""
        ...

    def set_gateway_pools(self, ids: list[str], member: bool) -> None:
        """Take these VMs out of every Application Gateway pool of the set's model (``member`` False: their own
        network configuration without them; the gateway drains their connections), or put them back (the
        model's). A Uniform set's VMs; an upgrade to the latest model puts them back too."""
        ...

    def network(self) -> Network | None:
        """The load balancers' side of the same connection (None: not reachable from here)."""
        ...

    def for_set(self, name: str) -> Gateway:
        """The same client on another scale set of this resource group (a blue/green rollout's new set)."""
        ...

    def clone(self, name: str, image: ImageRef, capacity: int, tags: dict[str, str]) -> None:
        """Create scale set ``name`` beside this one: this set's model with ``image``, ``capacity`` and its tags
        plus ``tags``. If-None-Match: PreconditionFailed when ``name`` exists (nothing is overwritten)."""
        ...

    def delete_set(self) -> None:
        """Delete this scale set and its VMs (accepted; the set goes once its VMs are gone)."""
        ...


class Network(Protocol):
    """What vmssctl needs from Microsoft.Network about a scale set: the load balancers in front of it (the pools its
    NIC configurations name) and what each rule says of each VM. Beside ``Gateway``, as Compute's seam is."""

    def backends(self, model: ScaleSet, health: bool = True) -> list[Backend]:
        """Every VM of the set behind every load-balancing rule of its pools: Up or Down for new connections
        (the rule's health; Unknown when ``health`` is False and it was not asked), and its admin state."""
        ...

    def refused(self, model: ScaleSet, actions: tuple[str, ...]) -> list[str]:
        """Which of these RBAC actions the credential may not do on the set's load balancers, asked without
        trying (``action on rg/lb``); [] when they are all allowed or it cannot be asked."""
        ...

    def set_admin(self, model: ScaleSet, ids: list[str], state: str) -> None:
        """Set these VMs' admin state (``Down``: no new connections, established ones kept; ``None``: the probe
        decides) in every pool of the set; returns once Network accepted it."""
        ...

