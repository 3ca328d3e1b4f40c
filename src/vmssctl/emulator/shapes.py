"""The JSON bodies Compute returns, built from the world's state.

Shapes follow the 2026-04-01 Compute spec and its examples (shared/reference/spec-examples);
this module and ``arm`` are the only places in vmssctl that know raw ARM JSON.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

import orjson

from vmssctl.emulator import world as w
from vmssctl.emulator.clock import iso

VMSS_TYPE = "Microsoft.Compute/virtualMachineScaleSets"
POWER_DISPLAY = {
    "running": "VM running", "stopping": "VM stopping", "stopped": "VM stopped", "starting": "VM starting",
    "deallocating": "VM deallocating", "deallocated": "VM deallocated",
}
HEALTH_DISPLAY = {
    "healthy": "The VM is reporting healthy", "unhealthy": "The VM is reporting unhealthy",
    "initializing": "The VM health is initializing", "unknown": "The VM health is unknown",
}


def set_id(sub: str, ss: w.ScaleSet) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{ss.rg}/providers/{VMSS_TYPE}/{ss.name}"


def group(sub: str, grp: dict) -> dict:
    return {
        "id": f"/subscriptions/{sub}/resourceGroups/{grp['name']}", "name": grp["name"],
        "type": "Microsoft.Resources/resourceGroups", "location": grp["location"], "tags": grp.get("tags") or {},
        "properties": {"provisioningState": "Succeeded"},
    }


def subscription(world: w.World, sub: str | None = None) -> dict:
    sub = next((x for x in world.subscriptions if sub and x.lower() == sub.lower()), world.subscription)
    return {
        "id": f"/subscriptions/{sub}", "subscriptionId": sub, "tenantId": world.tenant,
        "displayName": "vmssctl emulator" + (f" {world.subscriptions.index(sub) + 1}" if sub != world.subscription
                                               else ""), "state": "Enabled",
        "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01", "quotaId": "PayAsYouGo_2014-09-01",
                                 "spendingLimit": "Off"},
        "authorizationSource": "RoleBased",
    }


def scale_set(world: w.World, ss: w.ScaleSet) -> dict:
    model = orjson.loads(orjson.dumps(ss.model))  # (a deep copy of JSON: several times deepcopy's speed)
    props = model.pop("properties")
    vmp = props["virtualMachineProfile"]
    ref = vmp["storageProfile"].get("imageReference")
    if ref and ref.get("version"):
        if ref["version"].lower() == "latest":
            ref["exactVersion"] = world.catalog.resolve(ref)
        else:
            ref["exactVersion"] = ref["version"]
    props.update(provisioningState=ss.provisioning, uniqueId=ss.unique_id, timeCreated=iso(ss.created))
    body = {
        "id": set_id(world.scale_sets.subscription_of(ss), ss), "name": ss.name, "type": VMSS_TYPE,
        "location": ss.location,
        "etag": f'"{ss.etag}"', **model, "properties": props,
    }
    body.setdefault("tags", {})
    return body


def _status(code: str, display: str, time: str, level: str = "Info", message: str | None = None) -> dict:
    st = {"code": code, "level": level, "displayStatus": display, "time": time}
    if message:
        st["message"] = message
    return st


def instance_view(ss: w.ScaleSet, inst: w.Instance, name: str | None = None, frame: _Frame | None = None) -> dict:
    """``name``, ``frame``: the VM's computer name and its set's frame, when the caller has them already."""
    frame = frame or _frame(ss)
    changed = iso(inst.changed)  # (most of its statuses' time; a first listing formats every VM's)
    if inst.provisioning == "Failed" and inst.error:
        prov = _status(f"ProvisioningState/failed/{inst.error['code']}", "Provisioning failed", changed,
                       "Error", inst.error["message"])
    else:
        low = inst.provisioning.lower()
        prov = _status(f"ProvisioningState/{low}", f"Provisioning {low}", changed)
    view = {
        **({} if frame.flexible else {"platformUpdateDomain": inst.ud}),  # a Flexible set has no update domains
        "platformFaultDomain": inst.fd,
        "computerName": name or _computer_name(frame.prefix, inst.instance_id),
        "osName": "ubuntu", "osVersion": "24.04",
        "vmAgent": {"vmAgentVersion": "2.13.1.1", "statuses": [
            _status("ProvisioningState/succeeded", "Ready", changed)
        ] if inst.power == "running" else []},
        "disks": [{"name": f"{ss.name}_{inst.instance_id}_OsDisk",
                   "statuses": [_status("ProvisioningState/succeeded", "Provisioning succeeded",
                                        iso(inst.created))]}],
        "statuses": [prov, _status(f"PowerState/{inst.power}", POWER_DISPLAY[inst.power], changed)],
    }
    if inst.health and frame.health:
        view["vmHealth"] = {"status": _status(f"HealthState/{inst.health}", HEALTH_DISPLAY[inst.health], changed)}
    return view


class _Frame(NamedTuple):
    """What every VM of a set shows alike, worked out once per model (``ScaleSet.of_model``): a listing used to
    work each out again for every VM it encoded."""

    size: str
    tier: str
    admin: str  # the admin user name
    prefix: str  # of computer names
    digest: str  # the model's (a VM built from it runs the latest model)
    flexible: bool
    health: bool  # the model has the Application Health extension: instance views report the VMs' health


def _frame(ss: w.ScaleSet) -> _Frame:
    def make() -> _Frame:
        os_profile = ss.vm_profile.get("osProfile") or {}
        sku = ss.model["sku"]
        return _Frame(sku["name"], sku.get("tier", "Standard"), os_profile.get("adminUsername", "azureuser"),
                      os_profile.get("computerNamePrefix") or ss.name[:9], ss.profile_digest, ss.flexible,
                      ss.health_grace() is not None)
    return ss.of_model("_frame", make)


def computer_name(ss: w.ScaleSet, inst: w.Instance) -> str:
    return _computer_name(_frame(ss).prefix, inst.instance_id)


@lru_cache(maxsize=1 << 14)
def _computer_name(prefix: str, n: int) -> str:
    """The prefix and the instance id in base 36, six digits at least (as Compute names a Uniform set's VMs)."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            break
    return f"{prefix}{out.rjust(6, '0')}"


def _storage(ss: w.ScaleSet, inst: w.Instance) -> dict:
    """The VM's storage profile: its image's, with its own OS disk. Copied one level down (the response is
    encoded at once and never changed; a deep copy of each VM's image was a fifth of a listing's cost)."""
    image = inst.image or {}
    return {**image, "osDisk": {**(image.get("osDisk") or {}), "osType": "Linux",
                                "name": f"{inst.name or f'{ss.name}_{inst.instance_id}'}_OsDisk",
                                "createOption": "FromImage", "caching": "ReadWrite", "diskSizeGB": 30}}


def vm_id(world: w.World, ss: w.ScaleSet, inst: w.Instance) -> str:
    """A Flexible set's VM: an ordinary virtual machine in the set's resource group."""
    return f"/subscriptions/{world.scale_sets.subscription_of(ss)}/resourceGroups/{ss.rg}/providers/" \
           "Microsoft.Compute/" \
           f"virtualMachines/{inst.name}"


def vm(world: w.World, ss: w.ScaleSet, inst: w.Instance, expand: bool) -> dict:
    """A Flexible set's VM as ``Microsoft.Compute/virtualMachines`` shows it, pointing at its scale set."""
    props: dict[str, Any] = {
        "vmId": inst.vm_id,
        "virtualMachineScaleSet": {"id": set_id(world.scale_sets.subscription_of(ss), ss)},
        "hardwareProfile": {"vmSize": ss.model["sku"]["name"]},
        "storageProfile": _storage(ss, inst),
        "osProfile": {"computerName": computer_name(ss, inst),
                      "adminUsername": (ss.vm_profile.get("osProfile") or {}).get("adminUsername", "azureuser")},
        "provisioningState": inst.provisioning,
        "timeCreated": iso(inst.created),
    }
    if ss.fault_domains > 1:
        props["platformFaultDomain"] = inst.fd
    if expand:
        props["instanceView"] = instance_view(ss, inst)
    body: dict[str, Any] = {"name": inst.name, "id": vm_id(world, ss, inst),
                            "type": "Microsoft.Compute/virtualMachines", "location": ss.location,
                            "etag": f'"{inst.etag}"', "properties": props}
    if inst.zone:
        body["zones"] = [inst.zone]
    return body


def instance(world: w.World, ss: w.ScaleSet, inst: w.Instance, expand: bool) -> dict:
    frame = _frame(ss)
    if frame.flexible:  # the scale-set VM API on a Flexible set: the VMs by name, without the Uniform-only details
        flex: dict[str, Any] = {
            "name": inst.name, "id": vm_id(world, ss, inst), "type": "Microsoft.Compute/virtualMachines",
            "location": ss.location, "instanceId": inst.name,
            "properties": {"vmId": inst.vm_id, "provisioningState": inst.provisioning,
                           "hardwareProfile": {"vmSize": frame.size},
                           "storageProfile": _storage(ss, inst), "timeCreated": iso(inst.created)}}
        if inst.zone:
            flex["zones"] = [inst.zone]
        return flex
    name = _computer_name(frame.prefix, inst.instance_id)
    props: dict[str, Any] = {
        "latestModelApplied": inst.profile == frame.digest,
        "modelDefinitionApplied": "VirtualMachineScaleSet",
        "vmId": inst.vm_id,
        "hardwareProfile": {"vmSize": frame.size},
        "storageProfile": _storage(ss, inst),
        "osProfile": {"computerName": name, "adminUsername": frame.admin},
        "provisioningState": inst.provisioning,
        "timeCreated": iso(inst.created),
    }
    if inst.nics is not None:  # its own network configuration (else the model's, as the set shows it)
        props["networkProfileConfiguration"] = {"networkInterfaceConfigurations": inst.nics}
    if inst.protection:
        props["protectionPolicy"] = {"protectFromScaleIn": bool(inst.protection.get("protectFromScaleIn")),
                                     "protectFromScaleSetActions":
                                         bool(inst.protection.get("protectFromScaleSetActions"))}
    if expand:
        props["instanceView"] = instance_view(ss, inst, name, frame)
    body: dict[str, Any] = {
        "name": f"{ss.name}_{inst.instance_id}",
        "id": f"{set_id(world.scale_sets.subscription_of(ss), ss)}/virtualMachines/{inst.instance_id}",
        "type": f"{VMSS_TYPE}/virtualMachines", "location": ss.location, "etag": f'"{inst.etag}"',
        "instanceId": str(inst.instance_id), "sku": {"name": frame.size, "tier": frame.tier}, "properties": props,
    }
    if inst.zone:
        body["zones"] = [inst.zone]
    return body


# A VM's JSON as listings send it, by (the VM's id(), expanded?): the VM (held, so its id() is not reused), its
# etag and its set's model when it was encoded. Every change to a VM bumps its etag and a new model is a new
# dict (only the capacity, which a VM does not show, is changed in place): a listing encodes only what changed.
_ENCODED: dict[tuple[int, bool], tuple[w.Instance, int, dict, bytes]] = {}


def encoded_instance(world: w.World, ss: w.ScaleSet, inst: w.Instance, expand: bool) -> bytes:
    hit = _ENCODED.get((id(inst), expand))
    if hit is not None and hit[0] is inst and hit[1] == inst.etag and hit[2] is ss.model:
        return hit[3]
    data = orjson.dumps(instance(world, ss, inst, expand))  # (every key a string: a fifth faster than checking)
    if len(_ENCODED) >= 1 << 17:  # (VMs deleted long ago: start again)
        _ENCODED.clear()
    _ENCODED[id(inst), expand] = (inst, inst.etag, ss.model, data)
    return data


def set_instance_view(world: w.World, ss: w.ScaleSet) -> dict:
    prov: dict[str, int] = {}
    power: dict[str, int] = {}
    for inst in ss.instances.values():
        code = f"ProvisioningState/{inst.provisioning.lower()}"
        prov[code] = prov.get(code, 0) + 1
        power[f"PowerState/{inst.power}"] = power.get(f"PowerState/{inst.power}", 0) + 1
    view = {
        "virtualMachine": {"statusesSummary": [{"code": k, "count": v} for k, v in {**prov, **power}.items()]},
        "statuses": [_status(f"ProvisioningState/{ss.provisioning.lower()}",
                             f"Provisioning {ss.provisioning.lower()}", iso(ss.created))],
        "orchestrationServices": [],
    }
    exts = (ss.vm_profile.get("extensionProfile") or {}).get("extensions") or []
    running = sum(1 for i in ss.instances.values() if i.power == "running")
    if exts:  # as Compute reports them: the extensions' own provisioning, not what they observe
        view["extensions"] = [{"name": x.get("name"), "statusesSummary": [
            {"code": "ProvisioningState/succeeded", "count": running}]} for x in exts]
    return view


def rolling_status(world: w.World, ss: w.ScaleSet, ru: w.RollingUpgrade) -> dict:
    in_progress = len(ru.batch)
    props = {
        "policy": ru.policy,
        "runningStatus": {"code": ru.code, "startTime": iso(ru.start), "lastAction": ru.last_action,
                          "lastActionTime": iso(ru.last_action_time)},
        "progress": {
            "successfulInstanceCount": len(ru.upgraded) - len(ru.failed),
            "failedInstanceCount": len(ru.failed),
            "inProgressInstanceCount": in_progress,
            "pendingInstanceCount": len(ru.todo),
        },
    }
    if ru.error:
        props["error"] = {**ru.error, "details": [{"code": ru.error["code"], "target": f"instanceId {i}",
                                                   "message": "Instance is unhealthy after upgrade."}
                                                  for i in ru.failed]}
    return {
        "id": f"{set_id(world.scale_sets.subscription_of(ss), ss)}/rollingUpgrades/latest", "name": "latest",
        "type": f"{VMSS_TYPE}/rollingUpgrades", "location": ss.location, "tags": {}, "properties": props,
    }


def operation(op: w.Operation) -> dict:
    body: dict[str, Any] = {"name": op.id, "status": op.status, "startTime": iso(op.start)}
    if op.end is not None:
        body["endTime"] = iso(op.end)
    if op.error:
        body["error"] = op.error
    return body
