"""What a Network resource with child lists (a load balancer, an Application Gateway) is and how the world keeps
them: its id and children (``Parent``), and a store that finds, lists, deletes them and checks what every PUT
shares (``Store``: etag, name, location, body). Each resource type adds its own validation and shapes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from vmssctl.emulator import validate
from vmssctl.emulator.errors import ArmError, invalid
from vmssctl.emulator.resources.fields import SetKey, check_etag, check_location, key, strip_read_only

if TYPE_CHECKING:
    from vmssctl.emulator.world import World


class Parent:
    """A Network resource whose children live in its properties' lists (``kind`` -> [{name, properties}])."""

    TYPE: ClassVar[str]
    rg: str
    name: str
    subscription: str
    properties: dict

    @property
    def key(self) -> SetKey:
        return key(self.rg, self.name)

    @property
    def id(self) -> str:
        return f"/subscriptions/{self.subscription}/resourceGroups/{self.rg}/providers/{self.TYPE}/{self.name}"

    def child_id(self, kind: str, name: str) -> str:
        return f"{self.id}/{kind}/{name}"

    def children(self, kind: str) -> list[dict]:
        return list(self.properties.get(kind) or [])

    def child(self, kind: str, name: str) -> dict:
        for c in self.children(kind):
            if c["name"].lower() == name.lower():
                return c
        raise ArmError(404, "NotFound", f"Resource {self.child_id(kind, name)} not found.")


R = TypeVar("R", bound=Parent)


class Store(Generic[R]):
    """The world's resources of one type (``world.<attr>``, by group and name)."""

    TYPE: ClassVar[str]
    attr: ClassVar[str]  # the world's dict of them
    what: ClassVar[str]  # how ARM's messages name the type

    def __init__(self, world: World) -> None:
        self.world = world

    @property
    def _all(self) -> dict[SetKey, R]:
        return getattr(self.world, self.attr)

    def get(self, rg: str, name: str) -> R:
        self.world.resource_groups.get(rg)
        found = self._all.get(key(rg, name))
        if found is None:
            raise ArmError(404, "ResourceNotFound",
                           f"The Resource '{self.TYPE}/{name}' under resource group '{rg}' was not found.")
        return found

    def select(self, rg: str | None = None, subscription: str | None = None) -> list[R]:
        if rg is not None:
            self.world.resource_groups.get(rg)
        return [r for r in self._all.values() if (rg is None or r.rg.lower() == rg.lower())
                and (subscription is None or r.subscription.lower() == subscription.lower())]

    def delete(self, rg: str, name: str) -> bool:
        self.world.resource_groups.get(rg)
        gone = self._all.pop(key(rg, name), None)
        self.world.changes += 1
        return gone is not None

    def preamble(self, rg: str, name: str, body: Any, if_match: str | None,
                 if_none_match: str | None) -> tuple[dict, R | None, str, dict]:
        """What every PUT checks first: the group, the etag, the body, a new resource's name, the location, the
        properties (read-only ones stripped). Returns (the group, the resource it replaces, location, properties)."""
        grp = self.world.resource_groups.get(rg)
        old = self._all.get(key(rg, name))
        check_etag(getattr(old, "etag", None), if_match, if_none_match)
        if not isinstance(body, dict):
            raise invalid("The request body must be a JSON object.")
        if old is None:
            validate.check_network_name(name, self.what)
        location = body.get("location") or (getattr(old, "location", None) if old else None)
        if not location:
            raise invalid("Required parameter 'location' is missing (null).", "location")
        check_location(location)
        props = strip_read_only(body.get("properties") or {})
        if not isinstance(props, dict):
            raise invalid("The value of parameter 'properties' must be an object.", "properties")
        return grp, old, str(location), props
