"""Compute quota: vCPUs per subscription and region, in total and per VM family, as Compute counts and enforces them.

What a VM size is (its family and vCPUs) comes from a small table of common sizes (the resource SKUs API serves
it); usage is every scale set's capacity times its size's vCPUs, counted live; limits are Compute's defaults
unless an admin call lowers them (``/_emulator/quota``). A create or scale-out past a limit is refused as Compute
refuses it (409 ``OperationNotAllowed``, "exceeding approved … quota"), with nothing changed; the usages API
(``GET …/locations/{location}/usages``) says current value and limit of each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmssctl.emulator.errors import ArmError, invalid
from vmssctl.emulator.resources.fields import region

if TYPE_CHECKING:
    from vmssctl.emulator.resources.scalesets import ScaleSet
    from vmssctl.emulator.world import World

REGIONAL = "cores"  # the usage name of "Total Regional vCPUs"
DEFAULT_LIMIT = 100_000  # generous: only what a test or an operator lowers is ever reached
# the VM families the emulator knows: (usage name, its localized name, (size, vCPUs) ...)
_TABLE = (
    ("standardDSv5Family", "Standard DSv5 Family vCPUs", (("Standard_D2s_v5", 2), ("Standard_D4s_v5", 4),
                                                          ("Standard_D8s_v5", 8), ("Standard_D16s_v5", 16))),
    ("standardDSv3Family", "Standard DSv3 Family vCPUs", (("Standard_D2s_v3", 2), ("Standard_D4s_v3", 4))),
    ("standardDSv2Family", "Standard DSv2 Family vCPUs", (("Standard_DS1_v2", 1), ("Standard_DS2_v2", 2))),
    ("standardBSFamily", "Standard BS Family vCPUs", (("Standard_B1s", 1), ("Standard_B2s", 2))),
    ("standardFSv2Family", "Standard FSv2 Family vCPUs", (("Standard_F2s_v2", 2), ("Standard_F4s_v2", 4))),
    ("standardEDSv5Family", "Standard EDSv5 Family vCPUs", (("Standard_E2ds_v5", 2), ("Standard_E4ds_v5", 4))))
# size (lower case) -> (family, its localized name, vCPUs, the size as Compute spells it)
SIZES: dict[str, tuple[str, str, int, str]] = {
    name.lower(): (family, label, vcpus, name) for family, label, sizes in _TABLE for name, vcpus in sizes}
UNKNOWN = ("standardOtherFamily", "Standard Other Family vCPUs", 2, "")  # a size the table does not know


def size(name: str) -> tuple[str, str, int, str]:
    return SIZES.get(name.lower(), UNKNOWN)


class Quotas:
    """The world's limits (``world.limits``: subscription|location|usage name -> limit) and what uses them."""

    def __init__(self, world: World) -> None:
        self.world = world

    def limit(self, subscription: str, location: str, name: str) -> int:
        return int(self.world.limits.get(_key(subscription, location, name), DEFAULT_LIMIT))

    def set_limits(self, body: object) -> dict:
        """The admin call: {"location": ..., "subscription"?: ..., "limits": {"cores": 40, family: 20}}."""
        if not isinstance(body, dict) or not isinstance(body.get("limits"), dict):
            raise invalid("Send {\"location\": ..., \"limits\": {\"cores\": N, \"<family>\": N}}.", "limits")
        location = region(str(body.get("location", "")))
        if not location or len(location) > 40:
            raise invalid("'location' is required.", "location")
        subscription = str(body.get("subscription") or self.world.subscription)
        known = {REGIONAL, UNKNOWN[0]} | {f for f, _, _ in _TABLE}
        for name, value in body["limits"].items():
            if name not in known:
                raise invalid(f"Unknown usage '{str(name)[:80]}' (one of {', '.join(sorted(known))}).", "limits")
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= DEFAULT_LIMIT:
                raise invalid(f"The limit of '{name}' must be an integer from 0 to {DEFAULT_LIMIT}.", "limits")
        for name, value in body["limits"].items():
            self.world.limits[_key(subscription, location, name)] = value
        self.world.changes += 1
        return {"value": self.usages(subscription, location)}

    def used(self, subscription: str, location: str, skip: ScaleSet | None = None) -> dict[str, int]:
        """vCPUs in use, in total and by family: every set's capacity (``skip``: but this one's)."""
        out: dict[str, int] = {REGIONAL: 0}
        for ss in self.world.sets.of_subscription(subscription, self.world.subscription):
            where, family, vcpus = ss.quota_class
            if where != location or ss is skip:
                continue
            n = ss.model["sku"].get("capacity", 0) * vcpus
            out[REGIONAL] += n
            out[family] = out.get(family, 0) + n
        return out

    def check(self, subscription: str, location: str, model: dict, ss: ScaleSet | None) -> None:
        """Refuse a model whose capacity would take a vCPU quota past its limit (growing only: a set already over
        a lowered limit may keep its size or shrink), as Compute does."""
        location = region(location)
        family, _, vcpus, _ = size(str((model.get("sku") or {}).get("name", "")))
        wanted = int((model.get("sku") or {}).get("capacity", 0) or 0) * vcpus
        had = ss.capacity * size(str(ss.model["sku"].get("name", "")))[2] if ss is not None else 0
        if wanted <= had:
            return
        used = self.used(subscription, location, skip=ss)
        for name, label in ((family, f"{family} Cores"), (REGIONAL, "Total Regional Cores")):
            limit, now = self.limit(subscription, location, name), used.get(name, 0) + had
            extra = wanted - had
            if now + extra > limit:
                raise ArmError(409, "OperationNotAllowed", (
                    f"Operation could not be completed as it results in exceeding approved {label} quota. "
                    f"Additional details - Deployment Model: Resource Manager, Location: {location}, Current Limit: "
                    f"{limit}, Current Usage: {now}, Additional Required: {extra}, (Minimum) New Limit Required: "
                    f"{now + extra}. Submit a request for Quota increase at https://aka.ms/ProdportalCRP/#blade/"
                    "Microsoft_Azure_Capacity/UsageAndQuota.ReactView/Parameters/ by specifying parameters listed in "
                    "the 'Details' section for deployment to succeed."))

    def usages(self, subscription: str, location: str) -> list[dict]:
        """What the usages API lists: the regional total, then each family in the table."""
        location = region(location)
        used = self.used(subscription, location)
        rows = [(REGIONAL, "Total Regional vCPUs"), *sorted((f, label) for f, label, _ in _TABLE)]
        return [{"unit": "Count", "currentValue": used.get(name, 0), "limit": self.limit(subscription, location, name),
                 "name": {"value": name, "localizedValue": label}} for name, label in rows]

    def skus(self, location: str) -> list[dict]:
        """The resource SKUs API's virtual machine sizes: each with its family and vCPUs."""
        return [{"resourceType": "virtualMachines", "name": proper, "tier": "Standard", "size": proper.split("_", 1)[1],
                 "family": family, "locations": [location],
                 "locationInfo": [{"location": location, "zones": ["1", "2", "3"]}],
                 "capabilities": [{"name": "vCPUs", "value": str(vcpus)},
                                  {"name": "vCPUsAvailable", "value": str(vcpus)}],
                 "restrictions": []} for family, _, vcpus, proper in sorted(SIZES.values(), key=lambda r: r[3])]


def _key(subscription: str, location: str, name: str) -> str:
    return f"{subscription.lower()}|{region(location)}|{name}"
