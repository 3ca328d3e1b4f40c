"""The emulator driven by the real azure-mgmt-compute SDK over HTTPS."""

from __future__ import annotations

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.mgmt.compute.models import (
    ImageReference,
    VirtualMachineScaleSetUpdate,
    VirtualMachineScaleSetUpdateStorageProfile,
    VirtualMachineScaleSetUpdateVMProfile,
    VirtualMachineScaleSetVMInstanceIDs,
    VirtualMachineScaleSetVMInstanceRequiredIDs,
)

from vmssctl.azure import Connection, compute_client
from vmssctl.emulator.server import demo_scale_set
from vmssctl.model import Instance

NEW_VERSION = "24.04.202611200"


def image_patch(**ref) -> VirtualMachineScaleSetUpdate:
    return VirtualMachineScaleSetUpdate(virtual_machine_profile=VirtualMachineScaleSetUpdateVMProfile(
        storage_profile=VirtualMachineScaleSetUpdateStorageProfile(image_reference=ImageReference(**ref))))


def instances(client, rg: str, name: str = "web", **kw) -> list[Instance]:
    vms = client.virtual_machine_scale_set_vms.list(rg, name, expand="instanceView", **kw)
    return sorted((Instance.from_sdk(v) for v in vms), key=lambda i: int(i.instance_id))


def test_create_get_and_list_with_paging(emu, rg):
    client = emu.client()
    vmss = emu.create_set(rg, capacity=23)
    assert vmss.provisioning_state == "Succeeded"
    assert vmss.sku.capacity == 23 and vmss.etag
    got = client.virtual_machine_scale_sets.get(rg, "web")
    ref = got.virtual_machine_profile.storage_profile.image_reference
    assert (ref.publisher, ref.version, ref.exact_version) == ("Canonical", "24.04.202610010", "24.04.202610010")
    assert got.upgrade_policy.mode == "Manual" and got.platform_fault_domain_count == 5
    # 23 instances over pages of 10: the SDK follows absolute nextLinks that carry api-version
    vms = list(client.virtual_machine_scale_set_vms.list(rg, "web", expand="instanceView"))
    assert [v.instance_id for v in vms] == [str(i) for i in range(23)]
    view = vms[0].instance_view
    codes = {s.code for s in view.statuses}
    assert {"ProvisioningState/succeeded", "PowerState/running"} <= codes
    assert view.vm_health.status.code in ("HealthState/initializing", "HealthState/healthy")
    assert vms[0].zones is None and vms[0].latest_model_applied is True
    # UDs and FDs are balanced the way Compute spreads a 5x5 placement group
    insts = instances(client, rg)
    for attr in ("update_domain", "fault_domain"):
        counts = [sum(1 for i in insts if getattr(i, attr) == d) for d in range(5)]
        assert max(counts) - min(counts) <= 1, (attr, counts)
    assert [s.name for s in client.virtual_machine_scale_sets.list(rg)] == ["web"]
    assert any(s.name == "web" for s in client.virtual_machine_scale_sets.list_all())
    view = client.virtual_machine_scale_sets.get_instance_view(rg, "web")
    assert sum(s.count for s in view.virtual_machine.statuses_summary
               if s.code.startswith("ProvisioningState/")) == 23


def test_patch_image_then_manual_upgrade_with_the_real_poller(emu, rg):
    client = emu.client()
    emu.create_set(rg, capacity=6)
    before = client.virtual_machine_scale_sets.get(rg, "web").etag
    updated = client.virtual_machine_scale_sets.begin_update(rg, "web", image_patch(version=NEW_VERSION)).result()
    assert updated.virtual_machine_profile.storage_profile.image_reference.version == NEW_VERSION
    assert updated.virtual_machine_profile.storage_profile.image_reference.publisher == "Canonical"
    assert updated.etag != before
    behind = list(client.virtual_machine_scale_set_vms.list(rg, "web", filter="properties/latestModelApplied eq false"))
    assert len(behind) == 6
    client.virtual_machine_scale_sets.begin_update_instances(
        rg, "web", VirtualMachineScaleSetVMInstanceRequiredIDs(instance_ids=["0", "1"])).result()
    insts = instances(client, rg)
    assert [i.latest_model for i in insts] == [True, True, False, False, False, False]
    assert insts[0].image.exact_version == NEW_VERSION and insts[2].image.version == "24.04.202610010"
    assert insts[0].power == "running" and insts[0].provisioning == "succeeded"
    ahead = list(client.virtual_machine_scale_set_vms.list(rg, "web", filter="properties/latestModelApplied eq true"))
    assert sorted(v.instance_id for v in ahead) == ["0", "1"]


def test_power_reimage_restart_and_per_vm_actions(emu, rg):
    client = emu.client()
    emu.create_set(rg, capacity=3)
    ops = client.virtual_machine_scale_sets
    ops.begin_power_off(rg, "web", vm_instance_i_ds=VirtualMachineScaleSetVMInstanceIDs(instance_ids=["0"])).result()
    ops.begin_deallocate(rg, "web", vm_instance_i_ds=VirtualMachineScaleSetVMInstanceIDs(instance_ids=["1"])).result()
    insts = instances(client, rg)
    assert [i.power for i in insts] == ["stopped", "deallocated", "running"]
    ops.begin_start(rg, "web").result()
    assert [i.power for i in instances(client, rg)] == ["running"] * 3
    ops.begin_restart(rg, "web", vm_instance_i_ds=VirtualMachineScaleSetVMInstanceIDs(instance_ids=["2"])).result()
    ops.begin_reimage(rg, "web").result()
    vm_ops = client.virtual_machine_scale_set_vms
    vm_ops.begin_power_off(rg, "web", "1").result()
    assert vm_ops.get_instance_view(rg, "web", "1").statuses[1].code == "PowerState/stopped"
    vm_ops.begin_start(rg, "web", "1").result()
    vm_ops.begin_restart(rg, "web", "1").result()
    vm_ops.begin_reimage(rg, "web", "1").result()
    vm_ops.begin_deallocate(rg, "web", "2").result()
    assert vm_ops.get(rg, "web", "2", expand="instanceView").instance_view.statuses[1].code == \
        "PowerState/deallocated"
    vm_ops.begin_delete(rg, "web", "2").result()
    with pytest.raises(ResourceNotFoundError):
        vm_ops.get(rg, "web", "2")
    assert client.virtual_machine_scale_sets.get(rg, "web").sku.capacity == 2


def test_scale_out_and_in_keeps_domains_balanced(emu, rg):
    client = emu.client()
    emu.create_set(rg, capacity=5)
    ops = client.virtual_machine_scale_sets
    scaled = ops.begin_update(rg, "web", VirtualMachineScaleSetUpdate(sku={"name": "Standard_D2s_v5",
                                                                          "capacity": 12})).result()
    assert scaled.sku.capacity == 12
    insts = instances(client, rg)
    assert len(insts) == 12 and all(i.latest_model for i in insts)
    ops.begin_update(rg, "web", VirtualMachineScaleSetUpdate(sku={"name": "Standard_D2s_v5", "capacity": 4})).result()
    insts = instances(client, rg)
    assert len(insts) == 4
    assert len({i.fault_domain for i in insts}) == 4  # scale-in keeps fault domains spread
    assert max(int(i.instance_id) for i in insts) < 12


def test_errors_map_to_sdk_exceptions(emu, rg):
    client = emu.client()
    emu.create_set(rg, capacity=2)
    ops = client.virtual_machine_scale_sets
    with pytest.raises(ResourceNotFoundError) as e:
        ops.get(rg, "nope")
    assert e.value.error.code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError) as e:
        ops.get("no-such-rg", "web")
    assert e.value.error.code == "ResourceGroupNotFound"
    with pytest.raises(HttpResponseError) as e:
        ops.begin_update(rg, "web", image_patch(version="22.04.x")).result()
    assert e.value.status_code == 400 and e.value.error.code == "InvalidParameter"
    assert e.value.error.target.endswith("imageReference.version")
    with pytest.raises(HttpResponseError) as e:
        gallery = (f"/subscriptions/{emu.subscription}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/"
                   "g/images/web/versions/2.0.0")
        ops.begin_update(rg, "web", image_patch(id=gallery)).result()
    assert e.value.status_code == 400 and e.value.error.code == "PropertyChangeNotAllowed"
    with pytest.raises(ResourceModifiedError):
        ops.begin_update(rg, "web", image_patch(version=NEW_VERSION), etag='"999"',
                         match_condition=MatchConditions.IfNotModified).result()
    with pytest.raises(HttpResponseError) as e:
        client.virtual_machine_scale_sets.begin_update_instances(
            rg, "web", VirtualMachineScaleSetVMInstanceRequiredIDs(instance_ids=["77"])).result()
    assert e.value.status_code == 400 and e.value.error.target == "instanceIds"
    # nothing above changed the model
    assert ops.get(rg, "web").virtual_machine_profile.storage_profile.image_reference.version == "24.04.202610010"
    etag = ops.get(rg, "web").etag
    ops.begin_update(rg, "web", image_patch(version=NEW_VERSION), etag=etag,
                     match_condition=MatchConditions.IfNotModified).result()


def test_conflict_maps_to_resource_exists_error(frozen):
    rg = frozen.group()
    client = frozen.client()
    poller = client.virtual_machine_scale_sets.begin_create_or_update(rg, "web", demo_scale_set(2))
    ops = client.virtual_machine_scale_sets
    with pytest.raises(ResourceExistsError) as e:  # instances still being created (frozen clock)
        ops.begin_update_instances(rg, "web", VirtualMachineScaleSetVMInstanceRequiredIDs(instance_ids=["0"]))
    assert e.value.status_code == 409 and e.value.error.code == "OperationNotAllowed"
    frozen.admin("POST", "clock", {"advance": 600})
    assert poller.result().provisioning_state == "Succeeded"


def test_bad_token_is_refused(emu):
    bad = compute_client(Connection(emu.subscription, emu.endpoint, emu.info["ca"], "not-the-token"))
    with pytest.raises(ClientAuthenticationError):
        bad.virtual_machine_scale_sets.get("demo-rg", "demo-vmss")


def test_failed_lro_raises_with_the_provisioning_code(emu, rg):
    client = emu.client()
    emu.create_set(rg, "bad", capacity=3)
    with emu.fault("fail", scaleSet="bad", instanceId="1"):
        client.virtual_machine_scale_sets.begin_update(rg, "bad", image_patch(version=NEW_VERSION)).result()
        with pytest.raises(HttpResponseError) as e:
            client.virtual_machine_scale_sets.begin_update_instances(
                rg, "bad", VirtualMachineScaleSetVMInstanceRequiredIDs(instance_ids=["0", "1", "2"])).result()
        assert "OSProvisioningTimedOut" in str(e.value)
        failed = [i for i in instances(client, rg, "bad") if i.provisioning == "failed"]
        assert [i.instance_id for i in failed] == ["1"]
        assert failed[0].error.startswith("OSProvisioningTimedOut")


def test_unhealthy_image_fault(emu, rg):
    client = emu.client()
    emu.create_set(rg, "sick", capacity=2)
    with emu.fault("unhealthy", version="9.9.9"):
        client.virtual_machine_scale_sets.begin_update(rg, "sick", image_patch(version="9.9.9")).result()
        client.virtual_machine_scale_sets.begin_update_instances(
            rg, "sick", VirtualMachineScaleSetVMInstanceRequiredIDs(instance_ids=["0"])).result()
        emu.admin("POST", "clock", {"advance": 600})
        insts = instances(client, rg, "sick")
        assert (insts[0].health, insts[0].power, insts[0].provisioning) == ("unhealthy", "running", "succeeded")
        assert insts[1].health == "healthy"


def test_builtin_rolling_upgrade_keeps_the_policy_floor(emu, rg):
    client = emu.client()
    emu.create_set(rg, "roll", capacity=10)
    emu.admin("POST", "clock", {"advance": 600})  # everyone past the health grace period
    start = emu.now()
    ops = client.virtual_machine_scale_sets
    ops.begin_update(rg, "roll", image_patch(version=NEW_VERSION)).result()
    rolling = client.virtual_machine_scale_set_rolling_upgrades
    rolling.begin_start_os_upgrade(rg, "roll").result()
    latest = rolling.get_latest(rg, "roll")
    assert latest.running_status.code == "Completed"
    assert latest.progress.successful_instance_count == 10 and latest.progress.failed_instance_count == 0
    insts = instances(client, rg, "roll")
    assert all(i.latest_model and i.image.exact_version == NEW_VERSION for i in insts)
    record = emu.stats(since=start, records=True)["scaleSets"][f"{rg}/roll"]
    batch = 10 * 20 // 100
    assert record["minHealthy"] == 10 - batch  # batches of 2: never more than 2 down, and it did take 2 down
    assert record["minRunning"] >= 10 - batch


def test_rolling_upgrade_faults_on_an_unhealthy_image_and_cancel(emu, rg):
    client = emu.client()
    emu.create_set(rg, "rsick", capacity=10)
    with emu.fault("unhealthy", version="8.8.8"):
        client.virtual_machine_scale_sets.begin_update(rg, "rsick", image_patch(version="8.8.8")).result()
        rolling = client.virtual_machine_scale_set_rolling_upgrades
        with pytest.raises(HttpResponseError) as e:
            rolling.begin_start_os_upgrade(rg, "rsick").result()
        assert "MaxUnhealthyUpgradedInstancePercentExceededInRollingUpgrade" in str(e.value)
        latest = rolling.get_latest(rg, "rsick")
        assert latest.running_status.code == "Faulted"
        assert latest.progress.failed_instance_count == 2 and latest.progress.pending_instance_count == 8
    client.virtual_machine_scale_sets.begin_update(rg, "rsick", image_patch(version=NEW_VERSION)).result()
    rolling.begin_start_os_upgrade(rg, "rsick")
    rolling.begin_cancel(rg, "rsick").result()
    assert rolling.get_latest(rg, "rsick").running_status.code == "Cancelled"


def test_delete_scale_set(emu, rg):
    client = emu.client()
    emu.create_set(rg, "gone", capacity=2)
    client.virtual_machine_scale_sets.begin_delete(rg, "gone").result()
    with pytest.raises(ResourceNotFoundError):
        client.virtual_machine_scale_sets.get(rg, "gone")


def test_zonal_scale_set_spreads_instances(emu, rg):
    client = emu.client()
    emu.create_set(rg, "zonal", capacity=6, zones=["1", "2", "3"])
    vms = list(client.virtual_machine_scale_set_vms.list(rg, "zonal"))
    assert sorted(v.zones[0] for v in vms) == ["1", "1", "2", "2", "3", "3"]
    assert client.virtual_machine_scale_sets.get(rg, "zonal").zones == ["1", "2", "3"]


def test_a_flexible_set_through_the_sdk_vms_by_name_filter_and_actions(frozen):
    """Flexible orchestration as Compute serves it: the set's VMs are virtualMachines in its resource group,
    listed with the virtualMachineScaleSet/id filter (instance view only with it), upgraded by name."""
    emu = frozen
    rg = emu.group()
    client = emu.client()
    client.virtual_machine_scale_sets.begin_create_or_update(
        rg, "flex", demo_scale_set(4, flexible=True, fault_domains=2), polling=False)
    emu.admin("POST", "clock", {"advance": 900})
    ss = client.virtual_machine_scale_sets.get(rg, "flex")
    assert getattr(ss.orchestration_mode, "value", ss.orchestration_mode) == "Flexible"
    vms = list(client.virtual_machines.list(rg, filter=f"'virtualMachineScaleSet/id' eq '{ss.id}'",
                                            expand="instanceView"))
    names = sorted(v.name for v in vms)
    assert len(vms) == 4 and all(n.startswith("flex_") for n in names)
    assert all(v.virtual_machine_scale_set.id.lower() == ss.id.lower() for v in vms)
    assert {v.instance_view.platform_fault_domain for v in vms} == {0, 1}
    assert all(v.instance_view.platform_update_domain is None for v in vms)  # no update domains
    assert {v.instance_view.vm_health.status.code for v in vms} == {"HealthState/healthy"}
    with pytest.raises(HttpResponseError) as e:  # $expand=instanceView needs the filter
        list(client.virtual_machines.list(rg, expand="instanceView"))
    assert e.value.status_code == 400
    # the scale-set VM API answers too, naming the VMs by name
    assert sorted(v.instance_id for v in client.virtual_machine_scale_set_vms.list(rg, "flex")) == names

    client.virtual_machine_scale_sets.begin_update(rg, "flex", image_patch(version=NEW_VERSION), polling=False)
    client.virtual_machine_scale_sets.begin_update_instances(
        rg, "flex", VirtualMachineScaleSetVMInstanceRequiredIDs(instance_ids=[names[0]]), polling=False)
    with pytest.raises(HttpResponseError):  # numbers name nothing in a Flexible set
        client.virtual_machine_scale_sets.begin_update_instances(
            rg, "flex", VirtualMachineScaleSetVMInstanceRequiredIDs(instance_ids=["0"]), polling=False)
    client.virtual_machines.begin_power_off(rg, names[1], polling=False)
    emu.admin("POST", "clock", {"advance": 300})
    upgraded = client.virtual_machines.get(rg, names[0])
    assert upgraded.storage_profile.image_reference.version == NEW_VERSION
    view = client.virtual_machines.instance_view(rg, names[1])
    assert "PowerState/stopped" in [s.code for s in view.statuses]
    client.virtual_machines.begin_start(rg, names[1], polling=False)
    client.virtual_machines.begin_delete(rg, names[3], polling=False)
    emu.admin("POST", "clock", {"advance": 300})
    left = sorted(v.name for v in client.virtual_machines.list(rg, filter=f"'virtualMachineScaleSet/id' eq '{ss.id}'"))
    assert left == names[:3]
    assert client.virtual_machine_scale_sets.get(rg, "flex").sku.capacity == 3
    with pytest.raises(ResourceNotFoundError):
        client.virtual_machines.get(rg, names[3])
