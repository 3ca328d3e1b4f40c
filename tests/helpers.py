"""Helpers the test modules share (test modules never import each other): images, sets, reading instances and
the emulator's record, running vmssctl as a process and killing it at an event, the wire's paths."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass, field

from vmssctl.azure import Connection
from vmssctl.emulator.server import demo_scale_set
from vmssctl.emulator.world import DEFAULT_SUBSCRIPTION
from vmssctl.policy import Amount, RolloutPolicy
from vmssctl.rollout.events import Snapshot

NEW = "24.04.202611200"
OLD = "24.04.202610010"
API = {"api-version": "2026-04-01"}


def make_set(emu, capacity: int = 10, name: str = "web", settle: bool = True, **kwargs) -> str:
    rg = emu.group()
    emu.client().virtual_machine_scale_sets.begin_create_or_update(rg, name, demo_scale_set(capacity, **kwargs),
                                                                  polling=False)
    if settle:
        emu.admin("POST", "clock", {"advance": 900})
    return rg


def instances(emu, rg: str, name: str = "web"):
    from vmssctl.azure import ScaleSetApi
    return ScaleSetApi(emu.client(), rg, name).instances()


def record(emu, rg: str, since: float, name: str = "web") -> dict:
    return emu.stats(since=since)["scaleSets"][f"{rg}/{name}"]


def upgrade_args(emu, rg: str, journal, *flags: str) -> list[str]:
    return [sys.executable, "-m", "vmssctl", "upgrade", "-g", rg, "-n", "web", "--emulator", str(emu.state_dir),
            "--journal", str(journal), "-o", "json", "--yes", *flags]


def run_and_kill(args: list[str], kill_at: str, nth: int = 1) -> list[dict]:
    """Run vmssctl, SIGKILL it when the nth ``kill_at`` event appears; returns the events seen."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, count = [], 0
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        seen.append(event)
        if event["type"] == kill_at:
            count += 1
            if count == nth:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait(60)
    assert proc.returncode == -signal.SIGKILL, f"finished before the kill point: {seen[-3:]} {proc.stderr.read()}"
    return seen


def run(args: list[str]) -> tuple[int, list[dict], str]:
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    return r.returncode, [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")], r.stderr


def vmss_path(emu, rg: str, name: str = "web") -> str:
    return (f"/subscriptions/{emu.subscription}/resourceGroups/{rg}/providers/Microsoft.Compute/"
            f"virtualMachineScaleSets/{name}")


def running_set(emu, h, capacity: int) -> str:
    """PUT a scale set in a new resource group and let its instances come up; returns its path."""
    path = vmss_path(emu, emu.group())
    h.put(path, params=API, json=demo_scale_set(capacity)).raise_for_status()
    emu.admin("POST", "clock", {"advance": 600})
    return path


# ------------------------------------------------------------- the engine in process (on the emulator's world)
CONN = Connection("00000000-0000-0000-0000-000000000000", "https://in-process.invalid")


class Crash(BaseException):
    """Stands for kill -9: not an Exception, so nothing in the engine catches it."""


@dataclass
class Events:
    events: list[dict] = field(default_factory=list)
    progress: list = field(default_factory=list)

    def event(self, event: dict) -> None:
        self.events.append(event)

    def snapshot(self, snap: Snapshot) -> None:
        self.progress.append(snap.progress)

    def close(self) -> None:
        pass

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]


class Tripwire:
    """A gateway (or journal) that dies for good at the ``nth`` call of ``method``, as the process would."""

    def __init__(self, inner: object, method: str, nth: int, dead: list[bool]) -> None:
        self._inner, self._method, self._left, self._dead = inner, method, nth, dead

    def __getattr__(self, attr: str):
        value = getattr(self._inner, attr)
        if not callable(value):
            return value

        def call(*args, **kwargs):
            if self._dead[0]:
                raise Crash(attr)
            if attr == self._method:
                self._left -= 1
                if self._left == 0:
                    self._dead[0] = True
                    if attr in ("delete", "set_capacity", "upgrade"):  # the request reached ARM, the reply did not
                        value(*args, **kwargs)
                    raise Crash(attr)
            return value(*args, **kwargs)
        return call


def dies_at_admin_write(world, nth: int, dead: list[bool], rg: str = "rg", name: str = "web"):
    """An in-process gateway to set ``name`` whose load balancers' admin-state writes (``set_admin``) kill the
    process at the ``nth``."""
    from vmssctl.emulator.inprocess import WorldGateway, world_network

    net = Tripwire(world_network(world), "set_admin", nth, dead)
    gateway = WorldGateway(world, rg, name)
    gateway.network = lambda: net  # type: ignore[method-assign]
    return gateway


def make_policy(**policy) -> RolloutPolicy:
    """A policy from keyword arguments, amounts written as on the command line ("2", "25%")."""
    for key in ("max_unavailable", "max_unhealthy_upgraded", "max_surge", "green_weight"):
        if isinstance(policy.get(key), str):
            text = policy[key]
            policy[key] = Amount(float(text.rstrip("%")), text.endswith("%"))
    return RolloutPolicy(**{"no_health_signal": True, **policy})


# ------------------------------------------------------------------- a load balancer in front of a set
SUB = DEFAULT_SUBSCRIPTION


def lb_id(rg: str, name: str = "lb", sub: str = SUB) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/loadBalancers/{name}"


def lb_body(rg: str, sub: str = SUB, interval: int = 5, threshold: int = 2, probe: bool = True) -> dict:
    lid = lb_id(rg, sub=sub)
    rule: dict = {"protocol": "Tcp", "frontendPort": 80, "backendPort": 80, "idleTimeoutInMinutes": 4,
                  "enableTcpReset": True, "frontendIPConfiguration": {"id": f"{lid}/frontendIPConfigurations/fe"},
                  "backendAddressPool": {"id": f"{lid}/backendAddressPools/pool"}}
    if probe:
        rule["probe"] = {"id": f"{lid}/probes/http"}
    return {"location": "eastus", "sku": {"name": "Standard"}, "properties": {
        "frontendIPConfigurations": [{"name": "fe", "properties": {"privateIPAddress": "10.0.0.100"}}],
        "backendAddressPools": [{"name": "pool"}],
        "probes": [{"name": "http", "properties": {"protocol": "Http", "port": 80, "requestPath": "/health",
                                                   "intervalInSeconds": interval, "probeThreshold": threshold}}],
        "loadBalancingRules": [{"name": "web", "properties": rule}]}}


def in_pool(capacity: int, rg: str, sub: str = SUB, rolling: dict | None = None, gateway: bool = False,
            **kwargs) -> dict:
    """A demo set's body whose NIC names the pool of ``lb`` (``rolling``: its rollingUpgradePolicy; ``gateway``:
    the pool of Application Gateway ``gw`` instead)."""
    body = demo_scale_set(capacity, **kwargs)
    if rolling is not None:
        body["properties"]["upgradePolicy"]["rollingUpgradePolicy"] = rolling
    ipc = body["properties"]["virtualMachineProfile"]["networkProfile"]["networkInterfaceConfigurations"][0]
    key, rid = ("applicationGatewayBackendAddressPools", gw_id(rg, sub=sub)) if gateway else \
        ("loadBalancerBackendAddressPools", lb_id(rg, sub=sub))
    ipc["properties"]["ipConfigurations"][0]["properties"][key] = [{"id": f"{rid}/backendAddressPools/pool"}]
    return body


def gw_id(rg: str, name: str = "gw", sub: str = SUB) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/applicationGateways/{name}"


def gw_body(rg: str, sub: str = SUB, interval: int = 5, threshold: int = 2) -> dict:
    """An Application Gateway v2: one listener on port 80, one rule to pool ``pool`` through backend setting
    ``http`` (connection draining 60 s) and probe ``health``."""
    gid = gw_id(rg, sub=sub)
    ref = lambda kind, name: {"id": f"{gid}/{kind}/{name}"}  # noqa: E731
    return {"location": "eastus", "properties": {
        "sku": {"name": "Standard_v2", "tier": "Standard_v2", "capacity": 2},
        "gatewayIPConfigurations": [{"name": "gwip", "properties": {"subnet": {"id": f"/subscriptions/{sub}/"
                                     f"resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/vnet/"
                                     "subnets/appgw"}}}],
        "frontendIPConfigurations": [{"name": "fe", "properties": {"privateIPAddress": "10.0.1.10",
                                                                   "privateIPAllocationMethod": "Static"}}],
        "frontendPorts": [{"name": "p80", "properties": {"port": 80}}],
        "backendAddressPools": [{"name": "pool"}],
        "backendHttpSettingsCollection": [{"name": "http", "properties": {
            "port": 80, "protocol": "Http", "requestTimeout": 30, "probe": ref("probes", "health"),
            "connectionDraining": {"enabled": True, "drainTimeoutInSec": 60}}}],
        "httpListeners": [{"name": "web", "properties": {
            "frontendIPConfiguration": ref("frontendIPConfigurations", "fe"),
            "frontendPort": ref("frontendPorts", "p80"), "protocol": "Http"}}],
        "requestRoutingRules": [{"name": "web", "properties": {
            "ruleType": "Basic", "priority": 100, "httpListener": ref("httpListeners", "web"),
            "backendAddressPool": ref("backendAddressPools", "pool"),
            "backendHttpSettings": ref("backendHttpSettingsCollection", "http")}}],
        "probes": [{"name": "health", "properties": {"protocol": "Http", "host": "127.0.0.1", "path": "/health",
                                                     "interval": interval, "timeout": 5,
                                                     "unhealthyThreshold": threshold}}]}}


def world_behind_a_load_balancer(capacity: int, seed: int = 1):
    """An in-process world on a frozen clock: group rg, load balancer lb, set web of ``capacity`` in its pool,
    created and settled."""
    from vmssctl.emulator.clock import SimClock
    from vmssctl.emulator.world import World

    w = World(SimClock(0, start=1_000_000.0), seed=seed)
    w.resource_groups.put("rg", "eastus")
    w.load_balancers.put("rg", "lb", lb_body("rg"))
    w.scale_sets.put("rg", "web", in_pool(capacity, "rg"))
    w.clock.advance(900)
    w.advance()
    return w


def set_behind_a_load_balancer(emu, capacity: int, gateway: bool = False, **kwargs) -> tuple[str, object]:
    """On a running emulator: a new group with load balancer lb (``gateway``: Application Gateway gw instead) and
    set web of ``capacity`` in its pool, created and settled; (group, the Network client)."""
    from vmssctl.azure import network_client

    rg = emu.group()
    sub = emu.connection.subscription
    net = network_client(emu.connection)
    if gateway:
        net.application_gateways.begin_create_or_update(rg, "gw", gw_body(rg, sub)).result()
    else:
        net.load_balancers.begin_create_or_update(rg, "lb", lb_body(rg, sub)).result()
    emu.client().virtual_machine_scale_sets.begin_create_or_update(
        rg, "web", in_pool(capacity, rg, sub, gateway=gateway, **kwargs), polling=False)
    emu.admin("POST", "clock", {"advance": 900})
    return rg, net


def admin_states(emu, rg: str, net) -> set[str]:
    """The admin states of set web's VMs in the load balancers in front of it."""
    from vmssctl.azure import NetworkApi, ScaleSetApi

    return {b.admin for b in NetworkApi(net).backends(ScaleSetApi(emu.client(), rg, "web").get())}

