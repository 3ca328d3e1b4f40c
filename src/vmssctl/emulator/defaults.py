"""The defaults Compute writes into a scale-set model on create, as its responses show them.

The official examples (tests/spec_examples) answer a create with fields the request never
sent: ``osProfile.secrets``, the OS configuration block, NIC DNS settings, and so on.
Clients that PUT back what they GET depend on them being there.
"""

from __future__ import annotations


def os_type(vmp: dict) -> str:
    """The OS as Compute would record it; the emulator cannot open a VHD, so it reads the hints."""
    storage = vmp.get("storageProfile") or {}
    explicit = (storage.get("osDisk") or {}).get("osType")
    if explicit:
        return explicit
    os_profile = vmp.get("osProfile") or {}
    if "windowsConfiguration" in os_profile:
        return "Windows"
    if "linuxConfiguration" in os_profile:
        return "Linux"
    ref = storage.get("imageReference") or {}
    text = f"{ref.get('publisher', '')} {ref.get('offer', '')}".lower()
    return "Windows" if "windows" in text else "Linux"


def apply(model: dict) -> None:
    vmp = model["properties"]["virtualMachineProfile"]
    kind = os_type(vmp)
    storage = vmp["storageProfile"]
    os_disk = storage.setdefault("osDisk", {"createOption": "FromImage"})
    os_disk.setdefault("osType", kind)
    disk_type = (os_disk.get("managedDisk") or {}).get("storageAccountType", "Standard_LRS")
    for disk in storage.get("dataDisks") or []:
        disk.setdefault("caching", "None")
        disk.setdefault("managedDisk", {"storageAccountType": disk_type})
    if model.get("zones"):
        model["properties"].setdefault("zoneBalance", False)
    os_profile = vmp.get("osProfile")
    if isinstance(os_profile, dict):
        os_profile.setdefault("secrets", [])
        if kind == "Windows":
            os_profile.setdefault("windowsConfiguration", {"provisionVMAgent": True, "enableAutomaticUpdates": True})
        else:
            os_profile.setdefault("linuxConfiguration", {"disablePasswordAuthentication": False})
    for nic in (vmp.get("networkProfile") or {}).get("networkInterfaceConfigurations") or []:
        props = nic.setdefault("properties", {})
        props.setdefault("dnsSettings", {"dnsServers": []})
        props.setdefault("enableAcceleratedNetworking", False)
        for ip in props.get("ipConfigurations") or []:
            ip.setdefault("properties", {}).setdefault("privateIPAddressVersion", "IPv4")
