"""The real az CLI (2.91, its own venv) against the emulator, following the recipe of docs/emulator.md."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import start_emulator
from tests.helpers import gw_body, gw_id, lb_body, lb_id

REPO = Path(__file__).resolve().parent.parent
AZ = os.environ.get("VMSSCTL_AZ") or str(REPO / ".venv-az" / "bin" / "az")

pytestmark = pytest.mark.az


@pytest.fixture(scope="module")
def az(tmp_path_factory):
    if not os.access(AZ, os.X_OK):
        if os.environ.get("VMSSCTL_AZ"):
            pytest.fail(f"VMSSCTL_AZ={AZ} is not executable")
        pytest.skip("az CLI not installed (make az-venv)")
    # --retry-after: az polls long-running operations every 30 s when the service sends no Retry-After (as
    # real Compute does not); with it, az waits a second of real time, as its LRO poller honours the header
    e = start_emulator(tmp_path_factory.mktemp("az-emu"), "--time-scale", "1200", "--throttle", "off", "--demo",
                       "--retry-after")
    config = tmp_path_factory.mktemp("azure-config")
    env = {**os.environ, "AZURE_CONFIG_DIR": str(config), "REQUESTS_CA_BUNDLE": e.info["ca"],
           "IDENTITY_ENDPOINT": f"{e.endpoint}/metadata/identity/oauth2/token", "IDENTITY_HEADER": e.info["token"],
           "AZURE_CORE_COLLECT_TELEMETRY": "no", "AZURE_CORE_ONLY_SHOW_ERRORS": "true", "AZURE_CORE_NO_COLOR": "1"}

    def run(*args: str) -> object:
        r = subprocess.run([AZ, *args], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"az {' '.join(args)} failed: {r.stderr[-2000:]}"
        return json.loads(r.stdout) if r.stdout.strip() else None

    run("cloud", "register", "-n", "vmssctl-emulator", "--endpoint-resource-manager", e.endpoint)
    run("cloud", "set", "-n", "vmssctl-emulator")
    accounts = run("login", "--identity")
    assert accounts[0]["id"] == e.subscription
    yield run
    e.stop()


def test_az_show_list_update_and_rolling_upgrade(az):
    vmss = az("vmss", "show", "-g", "demo-rg", "-n", "demo-vmss")
    assert vmss["name"] == "demo-vmss" and vmss["sku"]["capacity"] == 20
    assert vmss["virtualMachineProfile"]["storageProfile"]["imageReference"]["offer"] == "ubuntu-24_04-lts"
    listed = az("vmss", "list-instances", "-g", "demo-rg", "-n", "demo-vmss")
    assert len(listed) == 20 and all(vm["latestModelApplied"] for vm in listed)
    az("vmss", "update", "-g", "demo-rg", "-n", "demo-vmss",
       "--set", "virtualMachineProfile.storageProfile.imageReference.version=24.04.202611200")
    az("vmss", "update-instances", "-g", "demo-rg", "-n", "demo-vmss", "--instance-ids", "0", "1")
    listed = {vm["instanceId"]: vm for vm in az("vmss", "list-instances", "-g", "demo-rg", "-n", "demo-vmss")}
    assert listed["0"]["latestModelApplied"] and listed["1"]["latestModelApplied"]
    assert not listed["2"]["latestModelApplied"]
    az("vmss", "rolling-upgrade", "start", "-g", "demo-rg", "-n", "demo-vmss")
    latest = az("vmss", "rolling-upgrade", "get-latest", "-g", "demo-rg", "-n", "demo-vmss")
    assert latest["runningStatus"]["code"] == "Completed"
    assert latest["progress"]["successfulInstanceCount"] == 18
    listed = az("vmss", "list-instances", "-g", "demo-rg", "-n", "demo-vmss")
    assert all(vm["latestModelApplied"] for vm in listed)
    assert {vm["storageProfile"]["imageReference"]["exactVersion"] for vm in listed} == {"24.04.202611200"}


def test_az_on_a_flexible_set_lists_upgrades_by_name_and_shows_its_vms(az, tmp_path):
    from vmssctl.emulator.server import demo_scale_set

    sub = az("account", "show")["id"]
    az("group", "create", "-n", "flex-rg", "-l", "eastus")
    body = tmp_path / "flex.json"
    body.write_text(json.dumps(demo_scale_set(3, flexible=True)))
    url = f"/subscriptions/{sub}/resourceGroups/flex-rg/providers/Microsoft.Compute/virtualMachineScaleSets/flex"
    az("rest", "--method", "put", "--url", f"{url}?api-version=2024-11-01", "--body", f"@{body}")
    assert az("vmss", "show", "-g", "flex-rg", "-n", "flex")["orchestrationMode"] == "Flexible"
    names = sorted(vm["instanceId"] for vm in az("vmss", "list-instances", "-g", "flex-rg", "-n", "flex"))
    assert len(names) == 3 and all(n.startswith("flex_") for n in names)
    az("vmss", "update", "-g", "flex-rg", "-n", "flex",
       "--set", "virtualMachineProfile.storageProfile.imageReference.version=24.04.202611200")
    az("vmss", "update-instances", "-g", "flex-rg", "-n", "flex", "--instance-ids", names[0])
    shown = az("vm", "show", "-g", "flex-rg", "-n", names[0])
    assert shown["storageProfile"]["imageReference"]["version"] == "24.04.202611200"
    assert shown["virtualMachineScaleSet"]["id"].lower().endswith("/virtualmachinescalesets/flex")
    assert az("vm", "show", "-g", "flex-rg", "-n", names[1])["storageProfile"]["imageReference"]["version"] == \
        "24.04.202610010"


def test_az_reads_a_load_balancer_its_probe_rule_and_pool(az):
    sub = az("account", "show")["id"]
    url = f"{lb_id('demo-rg', sub=sub)}?api-version=2025-07-01"
    az("rest", "--method", "put", "--url", url, "--body", json.dumps(lb_body("demo-rg", sub)))
    lb = az("network", "lb", "show", "-g", "demo-rg", "-n", "lb")
    assert lb["sku"]["name"] == "Standard" and lb["provisioningState"] == "Succeeded"
    probe = az("network", "lb", "probe", "show", "-g", "demo-rg", "--lb-name", "lb", "-n", "http")
    assert (probe["protocol"], probe["intervalInSeconds"], probe["probeThreshold"]) == ("Http", 5, 2)
    rule = az("network", "lb", "rule", "show", "-g", "demo-rg", "--lb-name", "lb", "-n", "web")
    assert rule["probe"]["id"].endswith("/probes/http") and rule["enableTcpReset"] is True
    pools = az("network", "lb", "address-pool", "list", "-g", "demo-rg", "--lb-name", "lb")
    assert [p["name"] for p in pools] == ["pool"]
    assert {p["name"] for p in az("network", "lb", "list", "-g", "demo-rg")} == {"lb", "demo-lb"}  # (the demo set's)


def test_az_reads_an_application_gateway_its_pool_and_backend_health(az):
    sub = az("account", "show")["id"]
    az("rest", "--method", "put", "--url", f"{gw_id('demo-rg', sub=sub)}?api-version=2025-07-01", "--body",
       json.dumps(gw_body("demo-rg", sub)))
    gw = az("network", "application-gateway", "show", "-g", "demo-rg", "-n", "gw")
    assert gw["sku"]["name"] == "Standard_v2" and gw["operationalState"] == "Running"
    settings = az("network", "application-gateway", "http-settings", "show", "-g", "demo-rg", "--gateway-name",
                  "gw", "-n", "http")
    assert settings["connectionDraining"] == {"enabled": True, "drainTimeoutInSec": 60}
    pools = az("network", "application-gateway", "address-pool", "list", "-g", "demo-rg", "--gateway-name", "gw")
    assert [p["name"] for p in pools] == ["pool"]
    health = az("network", "application-gateway", "show-backend-health", "-g", "demo-rg", "-n", "gw")
    assert health["backendAddressPools"][0]["backendHttpSettingsCollection"][0]["servers"] == []  # (no VM in it)
