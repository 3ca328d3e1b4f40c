"""Which VMs are in a backend pool (a load balancer's or an Application Gateway's): every VM, until it is gone, of
the scale sets whose NIC IP configurations name the pool, Uniform and Flexible; and how such a member is named
and addressed."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vmssctl.emulator.resources.scalesets import ScaleSet
    from vmssctl.emulator.resources.vms import Instance
    from vmssctl.emulator.world import World


@dataclass(frozen=True)
class Member:
    """A VM's IP configuration in a backend pool."""

    ss: ScaleSet
    inst: Instance
    ip_configuration: str  # its resource id
    ip_address: str

    @property
    def name(self) -> str:
        """Its name among the pool's ``loadBalancerBackendAddresses`` (how a client names it to set admin state:
        the NIC reference there is read-only)."""
        return member_name(self.ss, self.inst)


def member_name(ss: ScaleSet, inst: Instance) -> str:
    """A VM's name as a pool member: a Flexible VM's own name, a Uniform one's ``set_instanceid``."""
    return inst.name or f"{ss.name}_{inst.instance_id}"


UP = ("Up", "Healthy")  # what a load balancer's rule and an Application Gateway's backend health call serving


@dataclass(frozen=True)
class Route:
    """Where a rule (a load balancer's, an Application Gateway's) sends new requests: its pool's members, what it
    says of each at a moment (Up or Down for new requests, and why), and what becomes of the requests in flight on a
    VM that leaves the pool (``drain``: seconds they may finish, the gateway's connection draining; None: cut)."""

    members: list[Member]
    state: Callable[[Member, float], tuple[str, str]]
    drain: float | None = None

    def up(self, m: Member, at: float) -> bool:
        return self.state(m, at)[0] in UP


def members_of(world: World, subscription: str, pool_id: str, key: str) -> list[Member]:
    """The VMs of ``subscription``'s sets whose NIC IP configurations list ``pool_id`` under ``key``
    (``loadBalancerBackendAddressPools`` or ``applicationGatewayBackendAddressPools``)."""
    out: list[Member] = []
    for ss in world.scale_sets.select(subscription=subscription):
        model = ip_configurations(ss)
        for inst in sorted(ss.instances.values(), key=lambda i: i.instance_id):
            own = ip_configurations(ss, inst.nics) if inst.nics is not None else model  # (a VM's own, once set)
            for nic, ipc in own:
                pools = (ipc.get("properties") or {}).get(key) or []
                if any(str((p or {}).get("id", "")).lower() == pool_id.lower() for p in pools):
                    out.append(Member(ss, inst, ip_configuration_id(world, ss, inst, nic, ipc["name"]),
                                      ip_address(ss, inst)))
    return out


def ip_configurations(ss: ScaleSet, nics: list | None = None) -> list[tuple[str, dict]]:
    """(NIC configuration name, IP configuration) of the set's model, or of ``nics`` (a VM's own)."""
    out = []
    for nic in nics if nics is not None else \
            (ss.vm_profile.get("networkProfile") or {}).get("networkInterfaceConfigurations") or []:
        for ipc in (nic.get("properties") or {}).get("ipConfigurations") or []:
            if isinstance(ipc, dict) and ipc.get("name"):
                out.append((str(nic.get("name", "nic")), ipc))
    return out


def ip_configuration_id(world: World, ss: ScaleSet, inst: Instance, nic: str, ipc: str) -> str:
    sub = world.scale_sets.subscription_of(ss)
    if ss.flexible:  # a Flexible set's VM has a network interface of its own in the group
        return (f"/subscriptions/{sub}/resourceGroups/{ss.rg}/providers/Microsoft.Network/networkInterfaces/"
                f"{inst.name}-{nic}/ipConfigurations/{ipc}")
    return (f"/subscriptions/{sub}/resourceGroups/{ss.rg}/providers/Microsoft.Compute/virtualMachineScaleSets/"
            f"{ss.name}/virtualMachines/{inst.instance_id}/networkInterfaces/{nic}/ipConfigurations/{ipc}")


def ip_address(ss: ScaleSet, inst: Instance) -> str:
    """A private address, stable per VM: 10.<set>.<id / 250>.<id % 250 + 4>."""
    n = inst.instance_id
    return f"10.{zlib.crc32(repr(ss.key).encode()) % 250 + 1}.{n // 250 % 256}.{n % 250 + 4}"
