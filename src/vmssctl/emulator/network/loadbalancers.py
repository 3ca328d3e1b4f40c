"""Load balancers (Standard and Basic): frontends, backend pools, health probes and load-balancing rules, as
Microsoft.Network serves them; which VMs are in a pool (the scale sets whose NIC IP configurations name it, Uniform
and Flexible, until the VM is gone); what each rule's probe says of each backend (``probes``) and each backend's
admin state (Up: always eligible; Down: no new connections, established TCP ones persist; only in effect on a rule
with a probe, as Azure documents it). The rule's health (``POST …/loadBalancingRules/{rule}/health``) reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from vmssctl import inputs
from vmssctl.emulator import validate
from vmssctl.emulator.errors import ArmError, invalid
from vmssctl.emulator.network import probes
from vmssctl.emulator.network.fields import guid, number, ref_name
from vmssctl.emulator.network.members import Member, Route, members_of
from vmssctl.emulator.network.resource import Parent, Store
from vmssctl.emulator.resources import availability
from vmssctl.emulator.resources.fields import check_etag, strip_read_only

TYPE = "Microsoft.Network/loadBalancers"
CHILDREN = ("frontendIPConfigurations", "backendAddressPools", "probes", "loadBalancingRules")
SKUS = ("Basic", "Standard")
ADMIN_STATES = ("None", "Up", "Down")
PROBE_PROTOCOLS = ("Tcp", "Http", "Https")
RULE_PROTOCOLS = ("Tcp", "Udp", "All")
MAX_CHILDREN = 1000


@dataclass
class LoadBalancer(Parent):
    rg: str
    name: str
    location: str
    subscription: str
    sku: dict
    tags: dict
    properties: dict  # what the client owns: the four child lists, read-only fields stripped
    created: float
    etag: int = 1
    admin: dict[str, str] = field(default_factory=dict)  # "pool|backend address name" (lower case) -> Up | Down
    TYPE: ClassVar[str] = TYPE


class LoadBalancers(Store[LoadBalancer]):
    """The world's load balancers (``world.lbs``, by group and name)."""

    TYPE, attr, what = TYPE, "lbs", "load balancer"

    def put(self, rg: str, name: str, body: Any, if_match: str | None = None,
            if_none_match: str | None = None) -> tuple[LoadBalancer, bool]:
        """Create or replace a load balancer; returns it and whether it was created."""
        w = self.world
        grp, old, location, props = self.preamble(rg, name, body, if_match, if_none_match)
        sku = body.get("sku") or {"name": "Basic"}
        if not isinstance(sku, dict) or sku.get("name") not in SKUS:
            raise invalid(f"The load balancer SKU must be one of {', '.join(SKUS)}.", "sku.name")
        if old is not None and old.sku.get("name") != sku["name"]:
            raise ArmError(400, "CannotChangeSkuOfLoadBalancer", "The SKU of a load balancer cannot be changed.")
        tags = validate.check_tags(body.get("tags"))
        lb = LoadBalancer(rg=grp["name"], name=name, location=str(location),
                          subscription=w.resource_groups.subscription_of(grp), sku={"name": sku["name"],
                          "tier": sku.get("tier", "Regional")}, tags=tags, properties={}, created=w.now())
        lb.properties = _check_children(lb, props)
        admin = dict(old.admin) if old else {}
        for pool in lb.children("backendAddressPools"):
            admin.update(self._admin_states(lb, pool))
        lb.admin = {k: v for k, v in admin.items() if v != "None"}
        if old is not None:
            lb.created, lb.etag = old.created, old.etag + 1
        w.lbs[lb.key] = lb
        w.changes += 1
        return lb, old is None

    def put_pool(self, rg: str, name: str, pool_name: str, body: Any, if_match: str | None = None) -> LoadBalancer:
        """PUT one backend pool: how a backend's admin state is set (``loadBalancerBackendAddresses``); with
        If-Match, only if the load balancer is still as the caller read it (a pool's etag is its load balancer's)."""
        lb = self.get(rg, name)
        check_etag(lb.etag, if_match, None)
        if not isinstance(body, dict):
            raise invalid("The request body must be a JSON object.")
        pool = {"name": pool_name, "properties": strip_read_only(body.get("properties") or {})}
        pools = [p for p in lb.children("backendAddressPools") if p["name"].lower() != pool_name.lower()]
        desired = {"location": lb.location, "sku": lb.sku, "tags": lb.tags,
                   "properties": {**lb.properties, "backendAddressPools": [*pools, pool]}}
        updated, _ = self.put(rg, name, desired)
        return updated

    # -------------------------------------------------------------------- backends
    def _admin_states(self, lb: LoadBalancer, pool: dict) -> dict[str, str]:
        """The admin states a pool's body sets (``loadBalancerBackendAddresses[].properties.adminState``), each
        address named by its name, its NIC IP configuration (when a client sends back what it read) or its IP
        address; an address that is not a member of the pool is refused."""
        entries = _admin_entries(pool)
        if not entries:
            return {}
        known: dict[str, str] = {}
        for m in self.members(lb, pool["name"]):
            known.update({m.name.lower(): m.name, m.ip_configuration.lower(): m.name, m.ip_address: m.name})
        out = {}
        for name, ipc, ip, state in entries:
            target = known.get(ipc.lower()) or known.get(name.lower()) or known.get(ip)
            if target is None:
                raise invalid(f"Backend address '{inputs.shown(name or ipc or ip)}' is not a member of backend pool "
                              f"{pool['name']} (its members are the NICs that name the pool).",
                              "loadBalancerBackendAddresses")
            out[f"{pool['name'].lower()}|{target.lower()}"] = state
        return out

    def members(self, lb: LoadBalancer, pool_name: str) -> list[Member]:
        """The VMs in a pool: every VM (until it is gone) of the scale sets whose NIC IP configurations name it."""
        pool_id = lb.child_id("backendAddressPools", lb.child("backendAddressPools", pool_name)["name"])
        return members_of(self.world, lb.subscription, pool_id, "loadBalancerBackendAddressPools")

    def route(self, lb: LoadBalancer, rule_name: str) -> Route:
        """Where the rule sends new connections: Up by admin state when set (only on a rule with a probe, as Azure
        documents it), else by the probe, or always Up on a rule without one. A VM that leaves the pool (deleted)
        loses its connections."""
        rp = lb.child("loadBalancingRules", rule_name).get("properties") or {}
        pool = ref_name(rp.get("backendAddressPool"))
        probe = lb.child("probes", ref_name(rp["probe"])) if rp.get("probe") else None
        interval, threshold = _probe_timing(probe)
        admin = {k: v for k, v in lb.admin.items() if k.startswith(f"{pool.lower()}|")}

        def state(m: Member, at: float) -> tuple[str, str]:
            if probe is None:
                return probes.UP, "No health probe on the rule"
            set_to = admin.get(f"{pool.lower()}|{m.name.lower()}", "None")
            if set_to != "None":
                return set_to, f"Admin state {set_to}"
            up = probes.state(m.inst, availability.healthy(m.ss, m.inst), at, interval, threshold)
            return up, "Probe answered" if up == probes.UP else "Probe failed"

        return Route(self.members(lb, pool) if pool else [], state)

    def rule_health(self, lb: LoadBalancer, rule_name: str) -> dict:
        """Each backend of the rule's pool, Up or Down for new connections now, and why."""
        now = self.world.advance()
        route = self.route(lb, rule_name)
        rows = []
        for m in route.members:
            state, reason = route.state(m, now)
            rows.append({"ipAddress": m.ip_address, "networkInterfaceIPConfigurationId": m.ip_configuration,
                         "state": state, "reason": reason})
        up = sum(1 for r in rows if r["state"] == probes.UP)
        return {"up": up, "down": len(rows) - up, "loadBalancerBackendAddresses": rows}

    # ----------------------------------------------------------------------- shapes
    def render(self, lb: LoadBalancer) -> dict:
        props: dict[str, Any] = {"provisioningState": "Succeeded", "resourceGuid": guid(lb.id, lb.name)}
        for kind in CHILDREN:
            props[kind] = [self.render_child(lb, kind, c["name"]) for c in lb.children(kind)]
        props["inboundNatRules"], props["outboundRules"], props["inboundNatPools"] = [], [], []
        return {"name": lb.name, "id": lb.id, "etag": f'W/"{lb.etag}"', "type": TYPE, "location": lb.location,
                "tags": lb.tags, "sku": lb.sku, "properties": props}

    def render_child(self, lb: LoadBalancer, kind: str, name: str) -> dict:
        c = lb.child(kind, name)
        props: dict[str, Any] = {**(c.get("properties") or {}), "provisioningState": "Succeeded"}
        cid = lb.child_id(kind, c["name"])
        rules = [r for r in lb.children("loadBalancingRules") if any(
            str(((r.get("properties") or {}).get(ref) or {}).get("id", "")).lower() == cid.lower()
            for ref in ("frontendIPConfiguration", "backendAddressPool", "probe"))]
        if kind != "loadBalancingRules":
            props["loadBalancingRules"] = [{"id": lb.child_id("loadBalancingRules", r["name"])} for r in rules]
        if kind == "backendAddressPools":
            members = self.members(lb, c["name"])
            props["backendIPConfigurations"] = [{"id": m.ip_configuration} for m in members]
            props["loadBalancerBackendAddresses"] = [{
                "name": m.name,
                "properties": {"networkInterfaceIPConfiguration": {"id": m.ip_configuration},
                               "adminState": lb.admin.get(f"{c['name'].lower()}|{m.name.lower()}", "None")}}
                for m in members]
        return {"name": c["name"], "id": cid, "etag": f'W/"{lb.etag}"',
                "type": f"{TYPE}/{kind}", "properties": props}


# ------------------------------------------------------------------------------ validation
def _check_children(lb: LoadBalancer, props: dict) -> dict:
    """The four child lists, each entry named once, their references inside this load balancer, their numbers
    within Network's bounds; returns them as the client sent them (nothing else of a body is kept)."""
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
                raise ArmError(400, "DuplicateResourceName", f"Load balancer {lb.name} has two {kind} named {name}.")
            seen.add(name.lower())
            if not isinstance(item.get("properties") or {}, dict):
                raise invalid(f"The properties of {kind} '{name}' must be an object.", f"properties.{kind}")
        names[kind] = seen
        out[kind] = [{"name": i["name"], "properties": dict(i.get("properties") or {})} for i in items]
    for p in out["probes"]:
        _check_probe(p["name"], p["properties"])
    for r in out["loadBalancingRules"]:
        _check_rule(lb, r["name"], r["properties"], names)
    for pool in out["backendAddressPools"]:
        _admin_entries(pool)  # checked here; resolved against the pool's members by put
    return out


def _check_probe(name: str, p: dict) -> None:
    protocol = p.get("protocol")
    if protocol not in PROBE_PROTOCOLS:
        raise invalid(f"Probe {name}: protocol must be one of {', '.join(PROBE_PROTOCOLS)}.", "protocol")
    number(p, "port", 1, 65535, name, required=True)
    number(p, "intervalInSeconds", 5, 3600, name)
    number(p, "numberOfProbes", 1, 100, name)
    number(p, "probeThreshold", 1, 100, name)
    path = p.get("requestPath")
    if protocol == "Tcp" and path is not None:
        raise invalid(f"Probe {name}: a Tcp probe takes no requestPath.", "requestPath")
    if protocol != "Tcp" and (not isinstance(path, str) or not path.startswith("/") or len(path) > 1024):
        raise invalid(f"Probe {name}: an {protocol} probe needs a requestPath starting with '/'.", "requestPath")


def _check_rule(lb: LoadBalancer, name: str, p: dict, names: dict[str, set[str]]) -> None:
    if p.get("protocol") not in RULE_PROTOCOLS:
        raise invalid(f"Rule {name}: protocol must be one of {', '.join(RULE_PROTOCOLS)}.", "protocol")
    number(p, "frontendPort", 0, 65534, name, required=True)
    number(p, "backendPort", 0, 65535, name)
    number(p, "idleTimeoutInMinutes", 4, 100, name)
    for flag in ("enableTcpReset", "enableFloatingIP", "disableOutboundSnat"):
        if flag in p and not isinstance(p[flag], bool):
            raise invalid(f"Rule {name}: {flag} must be true or false.", flag)
    for ref, kind, required in (("frontendIPConfiguration", "frontendIPConfigurations", True),
                                ("backendAddressPool", "backendAddressPools", False), ("probe", "probes", False)):
        if p.get(ref) is None:
            if required:
                raise invalid(f"Rule {name}: {ref} is required.", ref)
            continue
        target = ref_name(p[ref])
        prefix = f"{lb.id}/{kind}/".lower()
        if not str((p[ref] or {}).get("id", "")).lower().startswith(prefix) or target.lower() not in names[kind]:
            raise ArmError(400, "InvalidResourceReference", f"Resource {(p[ref] or {}).get('id')} referenced by "
                           f"resource {lb.child_id('loadBalancingRules', name)} was not found.")


def _admin_entries(pool: dict) -> list[tuple[str, str, str, str]]:
    """(name, NIC IP configuration id, IP address, admin state) of each address a pool's body lists."""
    out = []
    for addr in (pool.get("properties") or {}).get("loadBalancerBackendAddresses") or []:
        if not isinstance(addr, dict):
            raise invalid("Every backend address must be an object.", "loadBalancerBackendAddresses")
        ap = addr.get("properties") or {}
        state = ap.get("adminState", "None")
        if state not in ADMIN_STATES:
            raise invalid(f"adminState must be one of {', '.join(ADMIN_STATES)}.", "adminState")
        ipc = str((ap.get("networkInterfaceIPConfiguration") or {}).get("id") or "")
        out.append((str(addr.get("name") or ""), ipc, str(ap.get("ipAddress") or ""), state))
    return out


# --------------------------------------------------------------------------------- helpers
def _probe_timing(probe: dict | None) -> tuple[float, int]:
    p = (probe or {}).get("properties") or {}
    return float(p.get("intervalInSeconds") or 15), int(p.get("probeThreshold") or p.get("numberOfProbes") or 1)
