"""Application Gateways (v2): frontends, listeners, routing rules, backend pools, backend HTTP settings (with
connection draining) and health probes, as Microsoft.Network serves them; which VMs are in a pool (the scale sets
whose NIC IP configurations name it in ``applicationGatewayBackendAddressPools``, as for a load balancer), and what
each backend setting's probe says of each of them (``POST …/backendhealth``: Healthy or Unhealthy, with the probe's
lag of ``probes``); where a rule sends requests (``route``: users' traffic, ``traffic``), and what connection draining
gives a VM that leaves a pool. Smaller than the load balancer: no per-member admin state (an Application Gateway
has none: a VM leaves rotation by leaving the pool).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from vmssctl.emulator import validate
from vmssctl.emulator.errors import ArmError, invalid
from vmssctl.emulator.network import probes
from vmssctl.emulator.network.fields import guid, number, ref_name
from vmssctl.emulator.network.members import Member, Route, members_of
from vmssctl.emulator.network.resource import Parent, Store
from vmssctl.emulator.resources import availability

TYPE = "Microsoft.Network/applicationGateways"
CHILDREN = ("gatewayIPConfigurations", "frontendIPConfigurations", "frontendPorts", "backendAddressPools",
            "backendHttpSettingsCollection", "httpListeners", "requestRoutingRules", "probes")
SKUS = ("Standard_v2", "WAF_v2")
PROTOCOLS = ("Http", "Https")
MAX_CHILDREN = 100
DEFAULT_PROBE = (30.0, 3)  # the gateway's default probe when a backend setting names none: every 30 s, 3 misses
# what a child refers to, by its kind: (property, the kind it names, required)
REFERENCES: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "backendHttpSettingsCollection": (("probe", "probes", False),),
    "httpListeners": (("frontendIPConfiguration", "frontendIPConfigurations", True),
                      ("frontendPort", "frontendPorts", True)),
    "requestRoutingRules": (("httpListener", "httpListeners", True),
                            ("backendAddressPool", "backendAddressPools", True),
                            ("backendHttpSettings", "backendHttpSettingsCollection", True)),
}


@dataclass
class AppGateway(Parent):
    rg: str
    name: str
    location: str
    subscription: str
    tags: dict
    properties: dict  # what the client owns: sku, autoscale and the child lists, read-only fields stripped
    created: float
    etag: int = 1
    TYPE: ClassVar[str] = TYPE


class AppGateways(Store[AppGateway]):
    """The world's Application Gateways (``world.appgws``, by group and name)."""

    TYPE, attr, what = TYPE, "appgws", "application gateway"

    def put(self, rg: str, name: str, body: Any, if_match: str | None = None,
            if_none_match: str | None = None) -> tuple[AppGateway, bool]:
        """Create or replace an Application Gateway; returns it and whether it was created."""
        w = self.world
        grp, old, location, props = self.preamble(rg, name, body, if_match, if_none_match)
        gw = AppGateway(rg=grp["name"], name=name, location=str(location),
                        subscription=w.resource_groups.subscription_of(grp), tags=validate.check_tags(body.get("tags")),
                        properties={}, created=w.now())
        gw.properties = {"sku": _check_sku(props), **_check_children(gw, props)}
        if isinstance(props.get("autoscaleConfiguration"), dict):
            gw.properties["autoscaleConfiguration"] = props["autoscaleConfiguration"]
        if old is not None:
            gw.created, gw.etag = old.created, old.etag + 1
        w.appgws[gw.key] = gw
        w.changes += 1
        return gw, old is None

    def members(self, gw: AppGateway, pool_name: str) -> list[Member]:
        pool_id = gw.child_id("backendAddressPools", gw.child("backendAddressPools", pool_name)["name"])
        return members_of(self.world, gw.subscription, pool_id, "applicationGatewayBackendAddressPools")

    def route(self, gw: AppGateway, rule_name: str) -> Route:
        """Where a request routing rule sends requests: to the members of its pool its backend setting's probe has
        Healthy; a VM that leaves the pool keeps its requests in flight for the setting's connection draining
        (``drainTimeoutInSec`` when enabled; without it they are cut)."""
        rp = gw.child("requestRoutingRules", rule_name).get("properties") or {}
        return self._route(gw, ref_name(rp.get("backendAddressPool")), ref_name(rp.get("backendHttpSettings")))

    def _route(self, gw: AppGateway, pool: str, settings: str) -> Route:
        sp = gw.child("backendHttpSettingsCollection", settings).get("properties") or {}
        probe = gw.child("probes", ref_name(sp["probe"])) if sp.get("probe") else None
        interval, threshold = _probe_timing(probe)
        draining = sp.get("connectionDraining") or {}

        def state(m: Member, at: float) -> tuple[str, str]:
            up = probes.state(m.inst, availability.healthy(m.ss, m.inst), at, interval, threshold)
            return ("Healthy", "Success. Received 200 status code") if up == probes.UP else \
                ("Unhealthy", "Time taken by the backend to respond to application gateway's health probe is more "
                              "than the time-out threshold in the probe configuration.")

        return Route(self.members(gw, pool), state,
                     float(draining["drainTimeoutInSec"]) if draining.get("enabled") else None)

    def backend_health(self, gw: AppGateway) -> dict:
        """Every pool a routing rule uses, under each backend setting it is used with: each member Healthy or
        Unhealthy as the setting's probe has it now."""
        now = self.world.advance()
        pairs: dict[str, list[str]] = {}  # pool -> its backend settings (in the rules' order)
        for r in gw.children("requestRoutingRules"):
            rp = r.get("properties") or {}
            pool, settings = ref_name(rp.get("backendAddressPool")), ref_name(rp.get("backendHttpSettings"))
            if pool and settings and settings not in pairs.setdefault(pool, []):
                pairs[pool].append(settings)
        out = []
        for pool, settings_names in pairs.items():
            per_settings = []
            for s in settings_names:
                route = self._route(gw, pool, s)
                servers = []
                for m in route.members:
                    health, log = route.state(m, now)
                    servers.append({"address": m.ip_address, "ipConfiguration": {"id": m.ip_configuration},
                                    "health": health, "healthProbeLog": log})
                per_settings.append({"backendHttpSettings": {"id": gw.child_id("backendHttpSettingsCollection", s)},
                                     "servers": servers})
            out.append({"backendAddressPool": {"id": gw.child_id("backendAddressPools", pool)},
                        "backendHttpSettingsCollection": per_settings})
        return {"backendAddressPools": out}

    # ----------------------------------------------------------------------- shapes
    def render(self, gw: AppGateway) -> dict:
        props: dict[str, Any] = {"provisioningState": "Succeeded", "operationalState": "Running",
                                 "resourceGuid": guid(gw.id, gw.name), "sku": gw.properties["sku"]}
        if "autoscaleConfiguration" in gw.properties:
            props["autoscaleConfiguration"] = gw.properties["autoscaleConfiguration"]
        for kind in CHILDREN:
            props[kind] = [self.render_child(gw, kind, c["name"]) for c in gw.children(kind)]
        return {"name": gw.name, "id": gw.id, "etag": f'W/"{gw.etag}"', "type": TYPE, "location": gw.location,
                "tags": gw.tags, "properties": props}

    def render_child(self, gw: AppGateway, kind: str, name: str) -> dict:
        c = gw.child(kind, name)
        props: dict[str, Any] = {**(c.get("properties") or {}), "provisioningState": "Succeeded"}
        if kind == "backendAddressPools":
            props["backendIPConfigurations"] = [{"id": m.ip_configuration} for m in self.members(gw, c["name"])]
            props.setdefault("backendAddresses", [])
        return {"name": c["name"], "id": gw.child_id(kind, c["name"]), "etag": f'W/"{gw.etag}"',
                "type": f"{TYPE}/{kind}", "properties": props}


# ------------------------------------------------------------------------------ validation
def _check_sku(props: dict) -> dict:
    sku = props.get("sku")
    if not isinstance(sku, dict) or sku.get("name") not in SKUS:
        raise invalid(f"The application gateway SKU must be one of {', '.join(SKUS)}.", "properties.sku.name")
    tier = sku.get("tier", sku["name"])
    if tier != sku["name"]:
        raise invalid(f"SKU tier {tier} does not go with SKU {sku['name']}.", "properties.sku.tier")
    out = {"name": sku["name"], "tier": tier}
    if "capacity" in sku:
        number(sku, "capacity", 1, 125, "sku")
        out["capacity"] = sku["capacity"]
    elif not isinstance(props.get("autoscaleConfiguration"), dict):
        raise invalid("A v2 application gateway needs sku.capacity or an autoscaleConfiguration.",
                      "properties.sku.capacity")
    else:
        auto = props["autoscaleConfiguration"]
        number(auto, "minCapacity", 0, 125, "autoscaleConfiguration", required=True)
        number(auto, "maxCapacity", 2, 125, "autoscaleConfiguration")
    return out


def _check_children(gw: AppGateway, props: dict) -> dict:
    """The child lists, each entry named once, its references inside this gateway, its numbers within Network's
    bounds; returns them as the client sent them."""
    out: dict[str, list] = {}
    names: dict[str, set[str]] = {}
    for kind in CHILDREN:
        items = props.get(kind) or []
        if not isinstance(items, list) or len(items) > MAX_CHILDREN:
            raise invalid(f"The value of parameter '{kind}' must be a list of at most {MAX_CHILDREN}.",
                          f"properties.{kind}")
        seen: set[str] = set()
        for item in items:
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str) or not name.strip() or len(name) > 80:
                raise invalid(f"Every entry of '{kind}' needs a name of 1 to 80 characters.", f"properties.{kind}")
            if name.lower() in seen:
                raise ArmError(400, "DuplicateResourceName", f"Application gateway {gw.name} has two {kind} named "
                               f"{name}.")
            seen.add(name.lower())
            if not isinstance(item.get("properties") or {}, dict):
                raise invalid(f"The properties of {kind} '{name}' must be an object.", f"properties.{kind}")
        names[kind] = seen
        out[kind] = [{"name": i["name"], "properties": dict(i.get("properties") or {})} for i in items]
    for kind, refs in REFERENCES.items():
        for item in out[kind]:
            for ref, target, required in refs:
                _check_ref(gw, kind, item["name"], item["properties"].get(ref), target, required, names)
    for s in out["backendHttpSettingsCollection"]:
        _check_settings(s["name"], s["properties"])
    for p in out["probes"]:
        _check_probe(p["name"], p["properties"])
    for r in out["requestRoutingRules"]:
        rp = r["properties"]
        if rp.get("ruleType", "Basic") not in ("Basic", "PathBasedRouting"):
            raise invalid(f"Rule {r['name']}: ruleType must be Basic or PathBasedRouting.", "ruleType")
        number(rp, "priority", 1, 20000, f"Rule {r['name']}", required=True)
    for listener in out["httpListeners"]:
        if listener["properties"].get("protocol") not in PROTOCOLS:
            raise invalid(f"Listener {listener['name']}: protocol must be Http or Https.", "protocol")
    return out


def _check_ref(gw: AppGateway, kind: str, owner: str, ref: Any, target: str, required: bool,
               names: dict[str, set[str]]) -> None:
    if ref is None:
        if required:
            raise invalid(f"{kind} {owner}: a reference to one of its {target} is required.", kind)
        return
    rid = str((ref or {}).get("id", "")) if isinstance(ref, dict) else ""
    if not rid.lower().startswith(f"{gw.id}/{target}/".lower()) or ref_name(ref).lower() not in names[target]:
        raise ArmError(400, "InvalidResourceReference", f"Resource {rid or ref} referenced by resource "
                       f"{gw.child_id(kind, owner)} was not found.")


def _check_settings(name: str, p: dict) -> None:
    number(p, "port", 1, 65535, f"Backend setting {name}", required=True)
    if p.get("protocol") not in PROTOCOLS:
        raise invalid(f"Backend setting {name}: protocol must be Http or Https.", "protocol")
    number(p, "requestTimeout", 1, 86400, f"Backend setting {name}")
    drain = p.get("connectionDraining")
    if drain is not None:
        if not isinstance(drain, dict) or not isinstance(drain.get("enabled"), bool):
            raise invalid(f"Backend setting {name}: connectionDraining needs enabled (true or false).",
                          "connectionDraining")
        number(drain, "drainTimeoutInSec", 1, 3600, f"Backend setting {name} connectionDraining", required=True)


def _check_probe(name: str, p: dict) -> None:
    if p.get("protocol") not in PROTOCOLS:
        raise invalid(f"Probe {name}: protocol must be Http or Https.", "protocol")
    path = p.get("path")
    if not isinstance(path, str) or not path.startswith("/") or len(path) > 1024:
        raise invalid(f"Probe {name}: path must start with '/'.", "path")
    for field_name, high in (("interval", 86400), ("timeout", 86400)):
        number(p, field_name, 1, high, f"Probe {name}", required=True)
    number(p, "unhealthyThreshold", 1, 20, f"Probe {name}", required=True)
    if not p.get("host") and not p.get("pickHostNameFromBackendHttpSettings"):
        raise invalid(f"Probe {name}: needs a host, or pickHostNameFromBackendHttpSettings.", "host")


def _probe_timing(probe: dict | None) -> tuple[float, int]:
    if probe is None:
        return DEFAULT_PROBE
    p = probe.get("properties") or {}
    return float(p.get("interval") or 30), int(p.get("unhealthyThreshold") or 3)
