"""ARM wire details that clients depend on, checked at the HTTP level over HTTPS."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlparse

import pytest

from tests.conftest import start_emulator
from tests.helpers import API, running_set, vmss_path
from vmssctl.emulator.server import demo_scale_set


def test_auth_is_required_and_errors_have_arm_shape(emu):
    path = vmss_path(emu, "demo-rg", "demo-vmss")
    with emu.http(token=None) as h:
        r = h.get(path, params=API)
        assert r.status_code == 401 and r.json()["error"]["code"] == "AuthenticationFailed"
        assert "Bearer" in r.headers["www-authenticate"]
        assert h.get("/_emulator/stats").status_code == 401
    with emu.http(token="forged.jwt.token") as h:
        assert h.get(path, params=API).status_code == 401
        assert h.get("/_emulator/stats").status_code == 401


def test_api_version_json_and_routing_errors(emu, rg):
    path = vmss_path(emu, rg)
    with emu.http() as h:
        r = h.get(path)
        assert r.status_code == 400 and r.json()["error"]["code"] == "MissingApiVersionParameter"
        r = h.get(path, params={"api-version": "1999-01-01"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidApiVersionParameter"
        for version in ("2023-09-01", "2024-11-01", "2026-04-01"):
            assert h.get(path, params={"api-version": version}).status_code == 404
        r = h.put(path, params=API, content=b'{"location": "eastus", ', headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidRequestContent"
        r = h.put(path, params=API, json=[1, 2])
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidRequestContent"
        r = h.put(path, params=API, json={"location": "eastus", "sku": {"name": "x", "capacity": "lots"},
                                          "properties": {}})
        assert r.status_code == 400 and r.json()["error"]["target"] == "sku.capacity"
        body = demo_scale_set(1)
        body["properties"]["virtualMachineProfile"]["storageProfile"]["osDisk"]["image"] = {"uri": "not a uri"}
        del body["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]
        r = h.put(path, params=API, json=body)
        assert r.status_code == 400 and r.json()["error"]["target"].endswith("osDisk.image.uri")
        r = h.get(f"/subscriptions/{emu.subscription}/resourceGroups/{rg}/providers/Microsoft.Compute/nothing",
                  params=API)
        assert r.status_code == 404 and "error" in r.json()
        r = h.get(f"/subscriptions/not-mine/resourceGroups/{rg}", params={"api-version": "2022-09-01"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "SubscriptionNotFound"
        r = h.delete(path, params=API)
        assert r.status_code == 204  # deleting what is not there is fine in ARM
        assert h.get(f"{path}/virtualMachines", params={**API, "$filter": "startswith(name,'a')"}).status_code == 404


def test_lro_headers_operation_status_and_location(frozen):
    emu = frozen
    path = vmss_path(emu, emu.group())
    with emu.http() as h:
        r = h.put(path, params=API, json=demo_scale_set(2))
        assert r.status_code == 201
        body = r.json()
        assert body["properties"]["provisioningState"] == "Creating" and body["etag"] == '"1"'
        assert "exactVersion" in body["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]
        status_url = r.headers["azure-asyncoperation"]
        assert status_url.startswith(emu.endpoint) and "api-version=2026-04-01" in status_url
        assert "/providers/Microsoft.Compute/locations/eastus/operations/" in status_url
        assert "retry-after" not in r.headers  # real Compute sends none on its LROs (tests/test_replay.py)
        op = h.get(status_url).json()
        assert op["status"] == "InProgress" and op["startTime"]
        r = h.post(f"{path}/restart", params=API)
        assert r.status_code == 409  # instances are still being created
        emu.admin("POST", "clock", {"advance": 3600})
        assert h.get(status_url).json()["status"] == "Succeeded"
        r = h.post(f"{path}/restart", params=API)
        assert r.status_code == 202 and not r.content
        location = r.headers["location"]
        assert "monitor=true" in location and "api-version=" in location
        assert h.get(location).status_code == 202
        emu.admin("POST", "clock", {"advance": 600})
        assert h.get(location).status_code == 200
        assert h.get(r.headers["azure-asyncoperation"]).json()["status"] == "Succeeded"


def test_conflicting_operation_is_409(frozen):
    emu = frozen
    with emu.http() as h:
        path = running_set(emu, h, 4)
        h.patch(path, params=API, json={"properties": {"virtualMachineProfile": {"storageProfile": {
            "imageReference": {"version": "24.04.202611200"}}}}})
        assert h.post(f"{path}/osRollingUpgrade", params=API).status_code == 202
        r = h.post(f"{path}/manualupgrade", params=API, json={"instanceIds": ["3"]})
        assert r.status_code == 409 and r.json()["error"]["code"] == "OperationNotAllowed"
        r = h.post(f"{path}/osRollingUpgrade", params=API)
        assert r.status_code == 409 and r.json()["error"]["code"] == "RollingUpgradeInProgress"
        latest = h.get(f"{path}/rollingUpgrades/latest", params=API).json()["properties"]
        assert latest["runningStatus"]["code"] == "RollingForward"
        assert latest["progress"] == {"successfulInstanceCount": 0, "failedInstanceCount": 0,
                                      "inProgressInstanceCount": 1, "pendingInstanceCount": 3}
        emu.admin("POST", "clock", {"advance": 3600})
        latest = h.get(f"{path}/rollingUpgrades/latest", params=API).json()["properties"]
        assert latest["runningStatus"]["code"] == "Completed"
        assert latest["progress"]["successfulInstanceCount"] == 4


def test_paging_links_are_absolute_and_keep_the_query(emu, rg):
    emu.create_set(rg, capacity=25)
    with emu.http() as h:
        r = h.get(f"{vmss_path(emu, rg)}/virtualMachines",
                  params={**API, "$expand": "instanceView", "$filter": "properties/latestModelApplied eq true"})
        page = r.json()
        assert len(page["value"]) == 10 and "instanceView" in page["value"][0]["properties"]
        link = urlparse(page["nextLink"])
        assert f"{link.scheme}://{link.netloc}" == emu.endpoint
        q = parse_qs(link.query)
        assert q["api-version"] == ["2026-04-01"] and q["$expand"] == ["instanceView"] and "$filter" in q
        seen = [v["instanceId"] for v in page["value"]]
        while "nextLink" in page:
            page = h.get(page["nextLink"]).json()
            seen += [v["instanceId"] for v in page["value"]]
        assert seen == [str(i) for i in range(25)]
        vm = page["value"][-1]
        assert vm["instanceId"] == "24" and vm["properties"]["latestModelApplied"] is True
        assert vm["id"].endswith("/virtualMachines/24")
        assert vm["properties"]["instanceView"]["platformFaultDomain"] in range(5)
        sel = h.get(f"{vmss_path(emu, rg)}/virtualMachines", params={**API, "$select": "instanceView"}).json()
        assert set(sel["value"][0]["properties"]) == {"instanceView"}


def test_etags_if_match_and_if_none_match(emu, rg):
    path = vmss_path(emu, rg)
    with emu.http() as h:
        r = h.put(path, params=API, json=demo_scale_set(1), headers={"If-Match": '"1"'})
        assert r.status_code == 412  # If-Match on a resource that does not exist
        assert h.put(path, params=API, json=demo_scale_set(1), headers={"If-None-Match": "*"}).status_code == 201
        r = h.put(path, params=API, json=demo_scale_set(1), headers={"If-None-Match": "*"})
        assert r.status_code == 412 and r.json()["error"]["code"] == "PreconditionFailed"
        etag = h.get(path, params=API).headers["etag"]
        patch = {"tags": {"owner": "me"}}
        assert h.patch(path, params=API, json=patch, headers={"If-Match": '"41"'}).status_code == 412
        r = h.patch(path, params=API, json=patch, headers={"If-Match": etag})
        assert r.status_code == 200 and r.json()["tags"] == {"owner": "me"}
        assert r.json()["etag"] != etag
        assert h.patch(path, params=API, json=patch, headers={"If-Match": etag}).status_code == 412
        assert h.patch(path, params=API, json=patch, headers={"If-Match": "*"}).status_code == 200
        assert h.patch(vmss_path(emu, rg, "other"), params=API, json=patch).status_code == 404
        emu.admin("POST", "clock", {"advance": 600}) if emu.info["timeScale"] == 0 else None
        for _ in range(200):  # a VM still being created changes its etag with every step: wait until it settles
            view = h.get(f"{path}/virtualMachines/0/instanceView", params=API).json()
            if (view.get("vmHealth") or {}).get("status", {}).get("code") == "HealthState/healthy":
                break
            time.sleep(0.05)
        vm = h.get(f"{path}/virtualMachines/0", params=API)
        assert h.put(f"{path}/virtualMachines/0", params=API, json=vm.json(),
                     headers={"If-Match": '"12345"'}).status_code == 412
        r = h.put(f"{path}/virtualMachines/0", params=API, json=vm.json(), headers={"If-Match": vm.headers["etag"]})
        assert r.status_code == 200 and r.json()["instanceId"] == "0" and "azure-asyncoperation" in r.headers


def test_metadata_subscriptions_and_identity_for_az(emu):
    with emu.http(token=None) as h:
        meta = h.get("/metadata/endpoints", params={"api-version": "2022-09-01"}).json()
        assert meta["resourceManager"].startswith(emu.endpoint) and meta["authentication"]["audiences"]
        assert h.get("/metadata/identity/oauth2/token", params={"resource": "x"}).status_code == 401
        r = h.get("/metadata/identity/oauth2/token", params={"api-version": "2019-08-01", "resource": "https://m/"},
                  headers={"X-IDENTITY-HEADER": emu.info["token"]})
        token = r.json()["access_token"]
        assert token.count(".") == 2 and r.json()["token_type"] == "Bearer"
    with emu.http(token=token) as h:
        subs = h.get("/subscriptions", params={"api-version": "2022-12-01"}).json()["value"]
        assert subs[0]["subscriptionId"] == emu.subscription and subs[0]["state"] == "Enabled"
        assert subs[0]["tenantId"]


def test_stats_count_requests_and_reset(emu, rg):
    emu.admin("POST", "stats/reset")
    with emu.http() as h:
        h.get(vmss_path(emu, rg), params=API)
        h.get(vmss_path(emu, "demo-rg", "demo-vmss"), params=API)
    stats = emu.stats()["requests"]
    assert stats["total"] == 2 and stats["writes"] == 0
    assert stats["byOperation"]["VirtualMachineScaleSets_Get"] == 2 and stats["byStatus"] == {"404": 1, "200": 1}
    log = emu.admin("GET", "requests")["requests"]
    assert [r["status"] for r in log[-2:]] == [404, 200]


def test_throttling_429_is_retried_by_the_sdk(tmp_path):
    e = start_emulator(tmp_path, "--time-scale", "1", "--throttle", "reads=3/2,writes=50/10", "--demo")
    try:
        client = e.client()
        for _ in range(6):
            assert client.virtual_machine_scale_sets.get("demo-rg", "demo-vmss").name == "demo-vmss"
        stats = e.stats()["requests"]
        assert stats["throttled"] >= 2 and stats["byStatus"]["429"] == stats["throttled"]
        with e.http() as h:
            for _ in range(5):
                r = h.get(vmss_path(e, "demo-rg", "demo-vmss"), params=API)
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["details"][0]["code"] == "TooManyRequests"
            assert "x-ms-ratelimit-remaining-subscription-reads" in r.headers
    finally:
        e.stop()


def test_random_5xx_and_429_still_let_the_sdk_finish(tmp_path):
    e = start_emulator(tmp_path, "--time-scale", "1200", "--throttle", "off", "--error-rate", "0.15",
                       "--throttle-rate", "0.1", "--seed", "7", "--demo")
    try:
        client = e.client(retry_backoff_factor=0.05)
        for _ in range(10):
            client.virtual_machine_scale_sets.get("demo-rg", "demo-vmss")
        assert len(list(client.virtual_machine_scale_set_vms.list("demo-rg", "demo-vmss"))) == 20
        stats = e.stats()["requests"]
        assert stats["injectedErrors"] > 0
    finally:
        e.stop()


def test_state_survives_a_restart_mid_upgrade(tmp_path):
    e = start_emulator(tmp_path, "--time-scale", "0", "--throttle", "off", "--demo")
    port = e.endpoint
    try:
        with e.http() as h:
            path = vmss_path(e, "demo-rg", "demo-vmss")
            h.patch(path, params=API, json={"properties": {"virtualMachineProfile": {"storageProfile": {
                "imageReference": {"version": "24.04.202611200"}}}}})
            r = h.post(f"{path}/manualupgrade", params=API, json={"instanceIds": ["0", "1"]})
            assert r.status_code == 202
            op_url = r.headers["azure-asyncoperation"]
        e.admin("POST", "clock", {"advance": 30})  # stopped, not yet reimaged; SIGTERM below saves the state
    finally:
        e.stop()
    e = start_emulator(tmp_path, "--time-scale", "0", "--throttle", "off")
    try:
        assert e.endpoint == port  # same port again, so configured clients keep working
        with e.http() as h:
            assert h.get(op_url).json()["status"] == "InProgress"
            vm = h.get(f"{path}/virtualMachines/0/instanceView", params=API).json()
            assert "PowerState/stopped" in [s["code"] for s in vm["statuses"]]
            e.admin("POST", "clock", {"advance": 600})
            assert h.get(op_url).json()["status"] == "Succeeded"
            vm = h.get(f"{path}/virtualMachines/0", params=API).json()
            assert vm["properties"]["latestModelApplied"] is True
            assert vm["properties"]["storageProfile"]["imageReference"]["exactVersion"] == "24.04.202611200"
    finally:
        e.stop()


@pytest.mark.parametrize("bad", ["--fault=version:unhealthy", "--throttle=reads=x", "--error-rate=2"])
def test_bad_emulator_flags_are_one_line_errors(bad, tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "vmssctl", "emulator", "--state-dir", str(tmp_path), bad],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1


def test_several_subscriptions_each_with_its_groups_sets_and_throttle(tmp_path):
    e = start_emulator(tmp_path, "--time-scale", "0", "--throttle", "reads=30/1,writes=30/1", "--subscriptions", "2")
    try:
        subs = e.info["subscriptions"]
        assert len(subs) == 2 and subs[0] == e.subscription
        with e.http() as h:
            listed = h.get("/subscriptions", params={"api-version": "2022-12-01"}).json()
            assert sorted(s["subscriptionId"] for s in listed["value"]) == sorted(subs)
            for sub, rg in zip(subs, ("rg-one", "rg-two"), strict=True):
                h.put(f"/subscriptions/{sub}/resourcegroups/{rg}", params={"api-version": "2022-09-01"},
                      json={"location": "eastus"}).raise_for_status()
                h.put(f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/"
                      "web", params=API, json=demo_scale_set(2)).raise_for_status()
            # a group of the other subscription is not found here, nor are its sets listed
            other = h.get(f"/subscriptions/{subs[0]}/resourceGroups/rg-two/providers/Microsoft.Compute/"
                          "virtualMachineScaleSets/web", params=API)
            assert other.status_code == 404 and other.json()["error"]["code"] == "ResourceGroupNotFound"
            for sub, rg in zip(subs, ("rg-one", "rg-two"), strict=True):
                sets = h.get(f"/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachineScaleSets",
                             params=API).json()["value"]
                assert [s["id"].split("/")[4] for s in sets] == [rg]
                assert sets[0]["id"].startswith(f"/subscriptions/{sub}")
            # each subscription has its own buckets: exhausting one leaves the other serving
            statuses = [h.get(f"/subscriptions/{subs[0]}/resourcegroups/rg-one", params={"api-version": "2022-09-01"})
                        .status_code for _ in range(40)]
            assert 429 in statuses
            assert h.get(f"/subscriptions/{subs[1]}/resourcegroups/rg-two",
                         params={"api-version": "2022-09-01"}).status_code == 200
    finally:
        e.stop()


def test_the_printed_az_hint_keeps_the_users_own_az_profile_untouched():
    """Following the hint must not switch the user's real az profile to the emulator cloud."""
    from vmssctl.emulator.server import instructions

    text = instructions({"endpoint": "https://127.0.0.1:8443", "ca": "/s/ca.pem", "subscription": "sub",
                         "stateDir": "/s"})
    export = text.index("export AZURE_CONFIG_DIR=/s/az")
    assert export < text.index("az cloud register") < text.index("az login --identity")
