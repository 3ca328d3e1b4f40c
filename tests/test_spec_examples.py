"""Official Compute REST examples (tests/spec_examples, copied unchanged) as test vectors.

Each create example's request body must be accepted as-is, and the emulator's answers must
carry every field the example's response shows, in the same place.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import API, running_set, vmss_path

EXAMPLES = Path(__file__).parent / "spec_examples"
CREATES = sorted(EXAMPLES.glob("VirtualMachineScaleSet_Create_*.json"))


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


def missing_keys(want: object, have: object, path: str = "") -> list[str]:
    """Key paths present in the example but absent from ours (objects only; lists by first item)."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return [path or "."]
        out = []
        for k, v in want.items():
            if k not in have:
                out.append(f"{path}.{k}")
            else:
                out += missing_keys(v, have[k], f"{path}.{k}")
        return out
    if isinstance(want, list) and want and isinstance(have, list) and have:
        return missing_keys(want[0], have[0], path + "[0]")
    return []


@pytest.mark.parametrize("path", CREATES, ids=[p.stem.split("_", 2)[2] for p in CREATES])
def test_create_examples_are_accepted_with_the_documented_response(frozen, path):
    ex = json.loads(path.read_text())
    rg = frozen.group()
    with frozen.http() as h:
        r = h.put(vmss_path(frozen, rg, "vmss"), params=API, json=ex["parameters"]["parameters"])
        assert r.status_code == 201, r.text
        body = r.json()
    want = ex["responses"]["201"]["body"]
    missing = missing_keys(want, body)
    if "Unmanaged" in path.stem and "osDisk" in json.dumps(ex["parameters"]["parameters"]):
        # Compute reads the OS type off the VHD; the emulator cannot, and says Linux unless told
        missing = [m for m in missing if not m.endswith(("osDisk.osType", "windowsConfiguration"))]
    assert missing == []
    assert body["type"] == want["type"] and body["sku"] == {**want["sku"], **body["sku"]}
    assert body["properties"]["provisioningState"] == "Creating"


def test_instance_views_and_list_carry_the_documented_fields(frozen):
    with frozen.http() as h:
        path = running_set(frozen, h, 2)
        view = h.get(f"{path}/virtualMachines/0/instanceView", params=API).json()
        want = example("VirtualMachineScaleSetVM_Get_InstanceView_WithLifecycleHookState.json")["responses"]["200"]
        for key in ("platformUpdateDomain", "platformFaultDomain", "vmAgent", "disks", "statuses"):
            assert key in view
        status = {k: v for k, v in want["body"]["statuses"][0].items() if k != "message"}  # message: on errors
        assert missing_keys(status, view["statuses"][0]) == []
        set_view = h.get(f"{path}/instanceView", params=API).json()
        want = example("VirtualMachineScaleSet_GetInstanceView_MaximumSet_Gen.json")["responses"]["200"]["body"]
        want["statuses"] = [{k: v for k, v in want["statuses"][0].items() if k != "message"}]
        assert missing_keys({k: want[k] for k in ("virtualMachine", "statuses")}, set_view) == []
        listed = h.get(f"{path}/virtualMachines", params={**API, "$expand": "instanceView"}).json()["value"][0]
        want = example("VirtualMachineScaleSetVM_List_MaximumSet_Gen.json")["responses"]["200"]["body"]["value"][0]
        for key in ("name", "id", "type", "location", "properties", "instanceId", "sku"):
            assert key in listed
        for key in ("latestModelApplied", "modelDefinitionApplied", "vmId", "hardwareProfile", "storageProfile",
                    "osProfile", "provisioningState", "instanceView", "timeCreated"):
            assert key in listed["properties"], key
        assert isinstance(listed["instanceId"], str) and "zones" not in listed["properties"]
        got = h.get(path, params=API).json()
        want = example("VirtualMachineScaleSet_Get.json")["responses"]["200"]["body"]
        assert missing_keys({k: want[k] for k in ("sku", "etag", "id", "name", "type", "location")}, got) == []


def test_rolling_status_has_the_documented_shape(frozen):
    with frozen.http() as h:
        path = running_set(frozen, h, 3)
        h.patch(path, params=API, json={"properties": {"virtualMachineProfile": {"storageProfile": {
            "imageReference": {"version": "24.04.202611200"}}}}})
        assert h.post(f"{path}/osRollingUpgrade", params=API).status_code == 202
        got = h.get(f"{path}/rollingUpgrades/latest", params=API).json()
    want = example("VirtualMachineScaleSetRollingUpgrade_GetLatest_MaximumSet_Gen.json")["responses"]["200"]["body"]
    props = want["properties"]
    assert missing_keys({k: props[k] for k in ("runningStatus", "progress")}, got["properties"]) == []
    for key in ("maxBatchInstancePercent", "maxUnhealthyInstancePercent", "maxUnhealthyUpgradedInstancePercent",
                "pauseTimeBetweenBatches", "prioritizeUnhealthyInstances"):
        assert key in got["properties"]["policy"]
