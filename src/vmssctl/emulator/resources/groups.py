"""Subscriptions and resource groups: the scopes every other resource lives in."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmssctl.emulator import validate
from vmssctl.emulator.errors import ArmError, conflict
from vmssctl.emulator.resources.fields import check_location

if TYPE_CHECKING:
    from vmssctl.emulator.resources.operations import Operation
    from vmssctl.emulator.world import World


class ResourceGroups:
    """The world's resource groups (``world.groups``, by lower-case name: the emulator keeps names unique across
    its subscriptions) and the subscriptions it serves."""

    def __init__(self, world: World) -> None:
        self.world = world

    def check_subscription(self, sub: str) -> None:
        if sub.lower() not in (x.lower() for x in self.world.subscriptions):
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")

    def subscription_of(self, grp: dict) -> str:
        """A resource group's subscription (groups saved before there were several are the default one's)."""
        return str(grp.get("subscription", self.world.subscription))

    def check_in_subscription(self, rg: str, sub: str) -> None:
        """A resource group of another subscription is not found in this one."""
        grp = self.world.groups.get(rg.lower())
        if grp is not None and self.subscription_of(grp).lower() != sub.lower():
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")

    def put(self, name: str, location: str, tags: dict | None = None,
            subscription: str | None = None) -> tuple[dict, bool]:
        w = self.world
        validate.check_resource_group_name(name)
        check_location(location)
        tags = validate.check_tags(tags)
        sub = subscription or w.subscription
        existing = w.groups.get(name.lower())
        if existing is not None and self.subscription_of(existing).lower() != sub.lower():
            raise conflict(f"The emulator keeps resource group names unique across its subscriptions: '{name}' is "
                           "taken in another one.", "ResourceGroupNameTaken")
        created = existing is None
        grp = w.groups.setdefault(name.lower(), {"name": name, "location": location, "subscription": sub})
        grp["tags"] = tags or {}
        w.changes += 1
        return grp, created

    def get(self, name: str) -> dict:
        grp = self.world.groups.get(name.lower())
        if grp is None:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found.")
        return grp

    def delete(self, name: str) -> Operation:
        """Deleting a group deletes every scale set in it."""
        w = self.world
        self.get(name)
        now = w.advance()
        for ss in [w.sets[k] for k in w.sets.of_group(name)]:
            w.scale_sets.remove(ss, now)
        for lb in [b for b in w.lbs.values() if b.rg.lower() == name.lower()]:
            del w.lbs[lb.key]
        del w.groups[name.lower()]
        w.changes += 1
        op = w.operations.new("DeleteResourceGroup", "global", now)
        w.operations.seal(op, now)
        return op
