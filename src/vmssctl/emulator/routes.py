"""The route table: which handler serves which ARM path and method, under which operation id (the name
Compute's REST specification gives it, what the request statistics count).

A pattern is a path of literal segments (compared without case, as ARM does) and ``{name}`` parameters; a
parameter with a ``:kind`` takes only the values listed for that kind. The first pattern that matches wins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmssctl.emulator.envelope import Handler
from vmssctl.emulator.handlers import network, platform, resources, scalesets, vms
from vmssctl.emulator.resources.vms import ACTIONS

FLEX_VM_ACTIONS = ("restart", "start", "poweroff", "deallocate", "reimage", "redeploy")  # a VM's own actions
KINDS = {
    "set_action": tuple(ACTIONS),
    "vm_action": tuple(a for a in ACTIONS if a not in ("manualupgrade", "delete")),
    "flex_action": FLEX_VM_ACTIONS,
    "lb_child": tuple(k.lower() for k in network.KINDS),
}
Name = str | Callable[[dict, list[str]], str]  # an operation id, or how to make one from the params and path
RG = "subscriptions/{sub}/resourcegroups/{rg}"
VMSS = RG + "/providers/microsoft.compute/virtualmachinescalesets"
FLEX = RG + "/providers/microsoft.compute/virtualmachines"
COMPUTE = "subscriptions/{sub}/providers/microsoft.compute"
NETWORK = "subscriptions/{sub}/providers/microsoft.network"
LB = RG + "/providers/microsoft.network/loadbalancers"
AG = RG + "/providers/microsoft.network/applicationgateways"
PERMISSIONS = "providers/microsoft.authorization/permissions"


def _set_action(p: dict, segs: list[str]) -> str:
    action = p["action"].lower()
    return "VirtualMachineScaleSets_" + {"manualupgrade": "UpdateInstances", "delete": "DeleteInstances"}.get(
        action, action.title())


def _vm_action(p: dict, segs: list[str]) -> str:
    return f"VirtualMachineScaleSetVMs_{p['action'].lower().title()}"


def _flex_action(p: dict, segs: list[str]) -> str:
    return f"VirtualMachines_{segs[8][:1].upper()}{segs[8][1:]}"


def _lb_children(p: dict, segs: list[str]) -> str:
    return f"LoadBalancer{network.KINDS[p['kind']][:1].upper()}{network.KINDS[p['kind']][1:]}_List"


def _lb_child(p: dict, segs: list[str]) -> str:
    return f"LoadBalancer{network.KINDS[p['kind']][:1].upper()}{network.KINDS[p['kind']][1:]}_Get"


TABLE: list[tuple[str, dict[str, tuple[Name, Handler]]]] = [
    ("subscriptions", {"GET": ("Subscriptions_List", resources.list_subscriptions)}),
    ("subscriptions/{sub}", {"GET": ("Subscriptions_Get", resources.get_subscription)}),
    ("subscriptions/{sub}/resourcegroups", {"GET": ("ResourceGroups_List", resources.list_groups)}),
    (COMPUTE + "/virtualmachinescalesets", {"GET": ("VirtualMachineScaleSets_ListAll", scalesets.list_all)}),
    (COMPUTE + "/locations/{location}/publishers/{publisher}/artifacttypes/vmimage/offers/{offer}/skus/{sku}/versions",
     {"GET": ("VirtualMachineImages_List", platform.list_image_versions)}),
    (COMPUTE + "/locations/{location}/operations/{op_id}", {"GET": ("Operations_Get", platform.get_operation)}),
    (COMPUTE + "/locations/{location}/publishers/{publisher}/artifacttypes/vmimage/offers/{offer}/skus/{sku}/versions"
     "/{version}", {"GET": ("VirtualMachineImages_Get", platform.get_image_version)}),
    (RG + "/providers/microsoft.compute/galleries/{gallery}/images/{image}/versions/{version}",
     {"GET": ("GalleryImageVersions_Get", platform.gallery_version),
      "PUT": ("GalleryImageVersions_CreateOrUpdate", platform.gallery_version)}),
    (COMPUTE + "/locations/{location}/usages", {"GET": ("Usage_List", platform.list_usages)}),
    (COMPUTE + "/skus", {"GET": ("ResourceSkus_List", platform.list_skus)}),
    (RG, {"GET": ("ResourceGroups_Get", resources.get_group), "HEAD": ("ResourceGroups_Head", resources.head_group),
          "PUT": ("ResourceGroups_Put", resources.put_group),
          "DELETE": ("ResourceGroups_Delete", resources.delete_group)}),
    (FLEX, {"GET": ("VirtualMachines_List", vms.list_flexible)}),
    (FLEX + "/{vm}", {"GET": ("VirtualMachines_Get", vms.get_flexible),
                      "DELETE": ("VirtualMachines_Delete", vms.delete_flexible)}),
    (FLEX + "/{vm}/instanceview", {"GET": ("VirtualMachines_InstanceView", vms.flexible_instance_view)}),
    (FLEX + "/{vm}/{action:flex_action}", {"POST": (_flex_action, vms.flexible_action)}),
    (VMSS, {"GET": ("VirtualMachineScaleSets_List", scalesets.list_in_group)}),
    (VMSS + "/{name}", {"GET": ("VirtualMachineScaleSets_Get", scalesets.get),
                        "PUT": ("VirtualMachineScaleSets_CreateOrUpdate", scalesets.put),
                        "PATCH": ("VirtualMachineScaleSets_Update", scalesets.patch),
                        "DELETE": ("VirtualMachineScaleSets_Delete", scalesets.delete)}),
    (VMSS + "/{name}/instanceview", {"GET": ("VirtualMachineScaleSets_GetInstanceView", scalesets.instance_view)}),
    (VMSS + "/{name}/osrollingupgrade",
     {"POST": ("VirtualMachineScaleSetRollingUpgrades_StartOSUpgrade", scalesets.start_rolling)}),
    (VMSS + "/{name}/rollingupgrades/latest",
     {"GET": ("VirtualMachineScaleSetRollingUpgrades_GetLatest", scalesets.latest_rolling)}),
    (VMSS + "/{name}/rollingupgrades/cancel",
     {"POST": ("VirtualMachineScaleSetRollingUpgrades_Cancel", scalesets.cancel_rolling)}),
    (VMSS + "/{name}/{action:set_action}", {"POST": (_set_action, scalesets.action)}),
    (VMSS + "/{name}/virtualmachines", {"GET": ("VirtualMachineScaleSetVMs_List", vms.list_in_set)}),
    (VMSS + "/{name}/virtualmachines/{iid}", {"GET": ("VirtualMachineScaleSetVMs_Get", vms.get),
                                              "PUT": ("VirtualMachineScaleSetVMs_Update", vms.put),
                                              "DELETE": ("VirtualMachineScaleSetVMs_Delete", vms.delete)}),
    (VMSS + "/{name}/virtualmachines/{iid}/instanceview",
     {"GET": ("VirtualMachineScaleSetVMs_GetInstanceView", vms.instance_view)}),
    (VMSS + "/{name}/virtualmachines/{iid}/{action:vm_action}", {"POST": (_vm_action, vms.action)}),
    (NETWORK + "/loadbalancers", {"GET": ("LoadBalancers_ListAll", network.list_all)}),
    (NETWORK + "/locations/{location}/operations/{op_id}",
     {"GET": ("NetworkOperations_Get", network.operation_status)}),
    (NETWORK + "/locations/{location}/operationresults/{op_id}",
     {"GET": ("NetworkOperationResults_Get", network.operation_result)}),
    (LB, {"GET": ("LoadBalancers_List", network.list_in_group)}),
    (LB + "/{lb}", {"GET": ("LoadBalancers_Get", network.get), "PUT": ("LoadBalancers_CreateOrUpdate", network.put),
                    "DELETE": ("LoadBalancers_Delete", network.delete)}),
    (LB + "/{lb}/{kind:lb_child}", {"GET": (_lb_children, network.list_children)}),
    (LB + "/{lb}/backendaddresspools/{child}", {"GET": ("LoadBalancerBackendAddressPools_Get", network.get_child),
                                                 "PUT": ("LoadBalancerBackendAddressPools_CreateOrUpdate",
                                                         network.put_pool)}),
    (LB + "/{lb}/{kind:lb_child}/{child}", {"GET": (_lb_child, network.get_child)}),
    (LB + "/{lb}/loadbalancingrules/{rule}/health",
     {"POST": ("LoadBalancerLoadBalancingRules_Health", network.rule_health)}),
    (NETWORK + "/applicationgateways", {"GET": ("ApplicationGateways_ListAll", network.all_gateways)}),
    (AG, {"GET": ("ApplicationGateways_List", network.gateways_in_group)}),
    (AG + "/{gw}", {"GET": ("ApplicationGateways_Get", network.get_gateway),
                    "PUT": ("ApplicationGateways_CreateOrUpdate", network.put_gateway),
                    "DELETE": ("ApplicationGateways_Delete", network.delete_gateway)}),
    (AG + "/{gw}/backendhealth", {"POST": ("ApplicationGateways_BackendHealth", network.backend_health)}),
    (RG + "/" + PERMISSIONS, {"GET": ("Permissions_ListForResourceGroup", resources.permissions)}),
    (RG + "/providers/{namespace}/{type}/{resource}/" + PERMISSIONS,
     {"GET": ("Permissions_ListForResource", resources.permissions)}),
    (RG + "/providers/{namespace}/{ptype}/{parent}/{type}/{resource}/" + PERMISSIONS,  # a child: a subnet
     {"GET": ("Permissions_ListForResource", resources.permissions)}),
]


@dataclass(frozen=True)
class Pattern:
    parts: tuple[tuple[str, str | None], ...]  # (literal, None) or (parameter, kind or "")

    @classmethod
    def parse(cls, text: str) -> Pattern:
        parts: list[tuple[str, str | None]] = []
        for seg in text.split("/"):
            if seg.startswith("{"):
                name, _, kind = seg[1:-1].partition(":")
                parts.append((name, kind))
            else:
                parts.append((seg, None))
        return cls(tuple(parts))

    def match(self, segs: list[str], low: list[str]) -> dict | None:
        if len(segs) != len(self.parts):
            return None
        params = {}
        for (name, kind), seg, lower in zip(self.parts, segs, low, strict=True):
            if kind is None:
                if lower != name:
                    return None
            elif kind:  # one of a kind's values, as the handlers spell it
                if lower not in KINDS[kind]:
                    return None
                params[name] = lower
            else:
                params[name] = seg
        return params


_COMPILED = [(Pattern.parse(text), methods) for text, methods in TABLE]
_BY_LENGTH: dict[int, list[tuple[Pattern, dict]]] = {}  # (a path is matched only by patterns as long as it is)
for _entry in _COMPILED:
    _BY_LENGTH.setdefault(len(_entry[0].parts), []).append(_entry)


@dataclass(frozen=True)
class Match:
    operation: str  # the operation id; "Unknown" when no pattern matches the path
    handler: Handler | None  # None: no route, or not this method (405)
    params: dict


def route(method: str, segs: list[str]) -> Match:
    """The route of a request: its path split on '/' without empty segments."""
    low = [s.lower() for s in segs]
    for pattern, methods in _BY_LENGTH.get(len(segs), ()):
        params = pattern.match(segs, low)
        if params is None:
            continue
        if method not in methods:
            name = next(iter(methods.values()))[0]
            family = name.split("_")[0] if isinstance(name, str) else "Unknown"
            return Match(f"{family}_{method.title()}", None, params)
        name, handler = methods[method]
        return Match(name if isinstance(name, str) else name(params, segs), handler, params)
    # no route; the subscription still says whose request budget it spent
    return Match("Unknown", None, {"sub": segs[1]} if len(low) >= 2 and low[0] == "subscriptions" else {})
