"""The emulator's load balancers: a scale set's VMs join the pools their NIC configurations name and leave them when
gone; a rule's probe marks a VM Up after one answered probe and Down only after ``probeThreshold`` missed ones (the
lag that loses requests); admin state overrides the probe on a rule with one. In process on a frozen clock for the
timing, and over HTTPS with ``azure-mgmt-network`` for the wire (Network's LROs, children, the health API).
"""

from __future__ import annotations

import pytest

from tests.helpers import (
    gw_body,
    in_pool,
    lb_body,
    lb_id,
    make_set,
    set_behind_a_load_balancer,
    world_behind_a_load_balancer,
)
from vmssctl.emulator.clock import SimClock
from vmssctl.emulator.errors import ArmError
from vmssctl.emulator.server import demo_scale_set
from vmssctl.emulator.world import World


@pytest.fixture
def world() -> World:
    return world_behind_a_load_balancer(3, seed=1)


def step(world: World, seconds: float) -> None:
    world.clock.advance(seconds)
    world.advance()


def health(world: World) -> dict[str, str]:
    rows = world.load_balancers.rule_health(world.load_balancers.get("rg", "lb"), "web")["loadBalancerBackendAddresses"]
    return {r["networkInterfaceIPConfigurationId"].split("/virtualMachines/")[1].split("/")[0]: r["state"]
            for r in rows}


def test_a_stopped_vm_stays_up_until_threshold_probes_missed_and_comes_up_after_one(world):
    assert health(world) == {"0": "Up", "1": "Up", "2": "Up"}
    world.vms.act("rg", "web", "poweroff", ["1"])
    step(world, 1)  # stopped at once (the power-off's first step), still Up in the load balancer...
    assert world.scale_sets.get("rg", "web").instances[1].power != "running"
    stopped = world.scale_sets.get("rg", "web").instances[1].unhealthy_at
    assert stopped is not None and health(world)["1"] == "Up"
    world.clock.advance(stopped + 2 * 5 - 0.01 - world.now())  # ... for threshold x interval = 10 s
    assert health(world)["1"] == "Up"
    world.clock.advance(0.02)
    assert health(world) == {"0": "Up", "1": "Down", "2": "Up"}
    step(world, 300)  # the power-off ends
    world.vms.act("rg", "web", "start", ["1"])
    vm = world.scale_sets.get("rg", "web").instances[1]
    while vm.healthy_at is None:  # a second at a time until it serves again
        step(world, 1)
    started = vm.healthy_at
    world.clock.advance(started + 5 - 0.01 - world.now())  # serving again, not yet probed
    assert health(world)["1"] == "Down"
    world.clock.advance(0.02)
    assert health(world)["1"] == "Up"


def test_admin_state_overrides_the_probe_and_vms_leave_the_pool_when_gone(world):
    lb = world.load_balancers.get("rg", "lb")
    members = world.load_balancers.members(lb, "pool")
    assert [m.inst.instance_id for m in members] == [0, 1, 2]
    target = members[0].ip_configuration
    world.load_balancers.put_pool("rg", "lb", "pool", {"properties": {"loadBalancerBackendAddresses": [
        {"name": "a", "properties": {"adminState": "Down", "networkInterfaceIPConfiguration": {"id": target}}}]}})
    row = world.load_balancers.rule_health(world.load_balancers.get("rg", "lb"), "web")
    assert (row["up"], row["down"]) == (2, 1) and row["loadBalancerBackendAddresses"][0]["reason"] == "Admin state Down"
    world.vms.act("rg", "web", "delete", ["2"])
    assert len(world.load_balancers.members(world.load_balancers.get("rg", "lb"), "pool")) == 3  # until it is gone
    step(world, 600)
    assert len(world.load_balancers.members(world.load_balancers.get("rg", "lb"), "pool")) == 2
    # a rule without a probe: admin state has no effect, every backend is Up
    world.load_balancers.put("rg", "lb", {**lb_body("rg", probe=False), "properties": {
        **lb_body("rg", probe=False)["properties"],
        "backendAddressPools": [{"name": "pool", "properties": {"loadBalancerBackendAddresses": [{
            "name": "a", "properties": {"adminState": "Down", "networkInterfaceIPConfiguration": {"id": target}}}]}}]}})
    assert health(world) == {"0": "Up", "1": "Up"}


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b["properties"]["probes"][0]["properties"].update(intervalInSeconds=2), "intervalInSeconds"),
    (lambda b: b["properties"]["probes"][0]["properties"].pop("requestPath"), "requestPath"),
    (lambda b: b["properties"]["loadBalancingRules"][0]["properties"].update(idleTimeoutInMinutes=1000),
     "idleTimeoutInMinutes"),
    (lambda b: b["properties"]["loadBalancingRules"][0]["properties"]["probe"].update(
        id=lb_id("rg") + "/probes/nope"), "was not found"),
    (lambda b: b["properties"]["backendAddressPools"].append({"name": "POOL"}), "two backendAddressPools"),
    (lambda b: b.update(sku={"name": "Premium"}), "SKU"),
    (lambda b: b["properties"]["backendAddressPools"][0].update(properties={"loadBalancerBackendAddresses": [
        {"properties": {"adminState": "Drain"}}]}), "adminState"),
    (lambda b: b["properties"]["backendAddressPools"][0].update(properties={"loadBalancerBackendAddresses": [
        {"name": "web_99", "properties": {"adminState": "Down"}}]}), "not a member"),
])
def test_bad_load_balancers_are_refused_and_change_nothing(world, mutate, message):
    body = lb_body("rg")
    mutate(body)
    before = world.load_balancers.get("rg", "lb").etag
    with pytest.raises(ArmError, match=message):
        world.load_balancers.put("rg", "lb", body)
    assert world.load_balancers.get("rg", "lb").etag == before


def test_the_sdk_creates_a_load_balancer_reads_its_pool_and_rule_health_and_sets_admin_state(emu):
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
    from azure.mgmt.network import NetworkManagementClient
    from azure.mgmt.network import models as nm

    from vmssctl.azure import network_client

    rg = make_set(emu, capacity=1, name="placeholder")  # a group (its own set is not in the pool)
    conn = emu.connection
    net = network_client(conn)
    assert isinstance(net, NetworkManagementClient)
    body = lb_body(rg, conn.subscription)
    lb = net.load_balancers.begin_create_or_update(rg, "lb", nm.LoadBalancer(body)).result()
    assert lb.provisioning_state == "Succeeded" and [p.name for p in lb.probes] == ["http"]
    emu.client().virtual_machine_scale_sets.begin_create_or_update(rg, "web", in_pool(3, rg, conn.subscription),
                                                                   polling=False)
    emu.client().virtual_machine_scale_sets.begin_create_or_update(
        rg, "flex", in_pool(2, rg, conn.subscription, flexible=True), polling=False)
    emu.admin("POST", "clock", {"advance": 900})
    pool = net.load_balancer_backend_address_pools.get(rg, "lb", "pool")
    ids = [c.id for c in pool.backend_ip_configurations]
    assert len(ids) == 5 and sum("/virtualMachineScaleSets/web/virtualMachines/" in i for i in ids) == 3
    assert sum("/Microsoft.Network/networkInterfaces/flex_" in i for i in ids) == 2
    assert net.load_balancer_probes.get(rg, "lb", "http").load_balancing_rules[0].id.endswith("/web")
    result = net.load_balancer_load_balancing_rules.begin_health(rg, "lb", "web").result()
    assert (result.up, result.down) == (5, 0)
    first = pool.load_balancer_backend_addresses[0]
    first.admin_state = "Down"
    pool = net.load_balancer_backend_address_pools.begin_create_or_update(
        rg, "lb", "pool", nm.BackendAddressPool(name="pool", load_balancer_backend_addresses=[first])).result()
    assert [a.admin_state for a in pool.load_balancer_backend_addresses].count("Down") == 1
    result = net.load_balancer_load_balancing_rules.begin_health(rg, "lb", "web").result()
    assert (result.up, result.down) == (4, 1)
    down = [a for a in result.load_balancer_backend_addresses if a.state == "Down"]
    assert down[0].network_interface_ip_configuration_id == first.network_interface_ip_configuration.id
    with pytest.raises(HttpResponseError, match="intervalInSeconds"):
        bad = lb_body(rg, conn.subscription, interval=1)
        net.load_balancers.begin_create_or_update(rg, "lb", nm.LoadBalancer(bad)).result()
    assert [lb.name for lb in net.load_balancers.list(rg)] == ["lb"]
    load = emu.admin("POST", "traffic", {"resourceGroup": rg, "loadBalancer": "lb", "rule": "web", "rps": 50})
    emu.admin("POST", "clock", {"advance": 60})  # (the admin API counts the requests users would have sent)
    row = next(x for x in emu.admin("GET", "stats")["traffic"] if x["id"] == load["id"])
    assert row["requests"] >= 3000 and row["failed"] == 0 and len(row["backends"]) == 4, row  # (one is Down)
    emu.admin("POST", f"traffic/{load['id']}/stop")
    net.load_balancers.begin_delete(rg, "lb").result()
    with pytest.raises(ResourceNotFoundError):
        net.load_balancers.get(rg, "lb")


def traffic(world: World, **extra) -> str:
    return world.traffic.start({"resourceGroup": "rg", "loadBalancer": "lb", "rule": "web", "rps": 300,
                                "meanDurationSeconds": 0.2, **extra}).id


def counts(world: World, tid: str) -> dict:
    world.advance()
    return world.loads[tid].report()


def test_traffic_counts_requests_lost_to_a_stop_and_to_the_probes_lag(world):
    tid = traffic(world)
    step(world, 60)
    assert counts(world, tid)["served"] == 18_000 and counts(world, tid)["failed"] == 0
    world.vms.act("rg", "web", "poweroff", ["1"])  # no drain: stopped while in rotation
    step(world, 60)
    c = counts(world, tid)
    # in flight on it when it stopped: 100 req/s x 0.2 s; then 2 probes x 5 s of its share sent to a dead VM
    assert c["failedBy"]["cut"] == 20 and 950 <= c["failedBy"]["probe-lag"] <= 1100, c
    assert c["failedBy"]["no-backend"] == 0 and c["served"] + c["failed"] == 36_000


def test_a_drained_vm_stops_without_a_failed_request_but_long_connections_need_their_time(world):
    tid = traffic(world, longLivedShare=0.05, longLivedSeconds=300)
    step(world, 30)
    world.load_balancers.put_pool("rg", "lb", "pool", {"properties": {"loadBalancerBackendAddresses": [
        {"name": "web_1", "properties": {"adminState": "Down"}}]}})
    step(world, 5)  # short requests are long done; long-lived connections persist (admin Down keeps them)
    world.vms.act("rg", "web", "poweroff", ["1"])
    step(world, 60)
    c = counts(world, tid)
    assert c["failedBy"]["probe-lag"] == 0 and c["failedBy"]["no-backend"] == 0
    # 5 long-lived connections a second for the 30 s it served, lasting 300 s on average: about 140 still open
    assert 130 <= c["failedBy"]["cut"] <= 150, c


def test_no_backend_left_fails_everything_and_the_counts_survive_a_restart(world):
    tid = traffic(world, durationSeconds=100)
    world.vms.act("rg", "web", "deallocate", None)
    step(world, 200)
    c = counts(world, tid)
    assert c["requests"] == 30_000 and c["failedBy"]["no-backend"] > 20_000, c
    again = World.load(world.dump(), SimClock(0, start=world.now()))
    assert again.loads[tid].report() == c
    with pytest.raises(ArmError, match="rps"):
        world.traffic.start({"resourceGroup": "rg", "loadBalancer": "lb", "rule": "web", "rps": -1})
    with pytest.raises(ArmError, match="web2"):
        world.traffic.start({"resourceGroup": "rg", "loadBalancer": "lb", "rule": "web2", "rps": 1})


def test_the_network_gateway_reads_each_vm_behind_each_rule_in_process(world):
    from vmssctl.emulator.inprocess import WorldGateway, world_network

    model = WorldGateway(world, "rg", "web").get()
    assert model.lb_pools == (f"{lb_id('rg')}/backendAddressPools/pool",)
    net = world_network(world)
    assert [(b.instance_id, b.state, b.admin) for b in net.backends(model)] == [
        ("0", "Up", "None"), ("1", "Up", "None"), ("2", "Up", "None")]
    world.load_balancers.put_pool("rg", "lb", "pool", {"properties": {"loadBalancerBackendAddresses": [
        {"name": "web_2", "properties": {"adminState": "Down"}}]}})
    world.vms.act("rg", "web", "poweroff", ["0"])
    step(world, 30)
    assert [(b.instance_id, b.state, b.admin) for b in net.backends(model)] == [
        ("0", "Down", "None"), ("1", "Up", "None"), ("2", "Down", "Down")]


def test_show_lists_the_load_balancing_rules_in_front_of_a_set(emu, capsys):
    import json

    from vmssctl.cli import main

    rg, net = set_behind_a_load_balancer(emu, 2)
    emu.client().virtual_machine_scale_sets.begin_create_or_update(rg, "placeholder", demo_scale_set(1), polling=False)
    emu.admin("POST", "clock", {"advance": 900})
    capsys.readouterr()
    assert main(["show", "-g", rg, "-n", "web", "--emulator", str(emu.state_dir), "-o", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["loadBalancing"] == [{"loadBalancer": f"{rg}/lb", "rule": "web", "probe": "http", "up": 2,
                                       "down": 0, "downInstances": [], "adminDown": []}]
    assert main(["show", "-g", rg, "-n", "web", "--emulator", str(emu.state_dir)]) == 0
    assert f"{rg}/lb rule web (probe http): 2 Up, 0 Down" in capsys.readouterr().out
    assert main(["show", "-g", rg, "-n", "placeholder", "--emulator", str(emu.state_dir), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["loadBalancing"] == []  # (a set behind none)
    net.load_balancers.begin_delete(rg, "lb").result()
    assert main(["show", "-g", rg, "-n", "web", "--emulator", str(emu.state_dir), "-o", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)  # the set is still shown, with why its load balancer is not
    assert shown["name"] == "web" and "cannot read its load balancers" in shown["loadBalancingError"]


# ------------------------------------------------------------------------------ Application Gateways
def test_the_sdk_creates_an_application_gateway_and_reads_its_pool_and_backend_health(frozen):
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    from vmssctl.azure import network_client

    emu = frozen  # (the probe's lag is asserted on a clock that moves only when told)
    rg = emu.group()
    conn = emu.connection
    net = network_client(conn)
    gw = net.application_gateways.begin_create_or_update(rg, "gw", gw_body(rg, conn.subscription)).result()
    assert gw.provisioning_state == "Succeeded" and gw.operational_state == "Running"
    assert gw.backend_http_settings_collection[0].connection_draining.drain_timeout_in_sec == 60
    emu.client().virtual_machine_scale_sets.begin_create_or_update(
        rg, "web", in_pool(3, rg, conn.subscription, gateway=True), polling=False)
    emu.admin("POST", "clock", {"advance": 900})
    pool = net.application_gateways.get(rg, "gw").backend_address_pools[0]
    assert sum("/virtualMachineScaleSets/web/virtualMachines/" in c.id for c in pool.backend_ip_configurations) == 3

    def health() -> list[str]:
        said = net.application_gateways.begin_backend_health(rg, "gw").result()
        return [s.health for s in said.backend_address_pools[0].backend_http_settings_collection[0].servers]
    assert health() == ["Healthy"] * 3
    emu.client().virtual_machine_scale_sets.begin_power_off(rg, "web", {"instanceIds": ["0"]}, polling=False)
    emu.admin("POST", "clock", {"advance": 3})
    assert health().count("Unhealthy") == 0  # the probe has not missed twice yet (every 5 s, 2 misses)
    emu.admin("POST", "clock", {"advance": 30})
    assert health().count("Unhealthy") == 1
    with pytest.raises(HttpResponseError) as refused:  # a reference to a probe it does not have
        body = gw_body(rg, conn.subscription)
        body["properties"]["probes"] = []
        net.application_gateways.begin_create_or_update(rg, "gw", body).result()
    assert refused.value.error.code == "InvalidResourceReference"
    assert net.application_gateways.get(rg, "gw").probes[0].name == "health"  # nothing changed
    net.application_gateways.begin_delete(rg, "gw").result()
    with pytest.raises(ResourceNotFoundError):
        net.application_gateways.get(rg, "gw")


def _gw_mutations():
    def settings(b):
        return b["properties"]["backendHttpSettingsCollection"][0]["properties"]

    return [
        (lambda b: b["properties"].update(sku={"name": "Basic"}), "SKU must be one of Standard_v2, WAF_v2"),
        (lambda b: settings(b).update(connectionDraining={"enabled": True, "drainTimeoutInSec": 0}),
         "drainTimeoutInSec must be an integer from 1 to 3600"),
        (lambda b: settings(b).update(port=70000), "port must be an integer from 1 to 65535"),
        (lambda b: b["properties"]["probes"][0]["properties"].update(unhealthyThreshold=21),
         "unhealthyThreshold must be an integer from 1 to 20"),
        (lambda b: b["properties"]["probes"][0]["properties"].update(path="health"), "path must start with '/'"),
        (lambda b: b["properties"]["requestRoutingRules"][0]["properties"].pop("priority"),
         "priority must be an integer from 1 to 20000"),
        (lambda b: b["properties"]["backendAddressPools"].append({"name": "POOL"}), "two backendAddressPools"),
        (lambda b: b["properties"]["sku"].pop("capacity"), "sku.capacity or an autoscaleConfiguration"),
    ]


@pytest.mark.parametrize("mutate, message", _gw_mutations())
def test_bad_application_gateways_are_refused_and_change_nothing(world, mutate, message):
    world.app_gateways.put("rg", "gw", gw_body("rg"))
    body = gw_body("rg")
    mutate(body)
    with pytest.raises(ArmError, match=message):
        world.app_gateways.put("rg", "gw", body)
    assert world.app_gateways.get("rg", "gw").etag == 1


def test_show_and_the_plan_read_an_application_gateway_in_front_of_a_set(frozen, capsys, tmp_path):
    """vmssctl reads the gateway as it reads a load balancer (its routing rules on the set's pools, each member's
    health from backendhealth); --drain auto does not drain by it (it has no admin state) and says so."""
    import json

    from rich.text import Text

    from tests.helpers import CONN, NEW, make_policy
    from vmssctl import upgrade
    from vmssctl.azure import network_client
    from vmssctl.cli import main
    from vmssctl.emulator.inprocess import WorldGateway
    from vmssctl.render import plan_lines
    from vmssctl.rollout.journal import Journal
    from vmssctl.target import ImageChange

    rg, sub = frozen.group(), frozen.connection.subscription
    network_client(frozen.connection).application_gateways.begin_create_or_update(rg, "gw", gw_body(rg, sub)).result()
    frozen.client().virtual_machine_scale_sets.begin_create_or_update(rg, "web", in_pool(3, rg, sub, gateway=True),
                                                                      polling=False)
    frozen.admin("POST", "clock", {"advance": 900})
    capsys.readouterr()
    assert main(["show", "-g", rg, "-n", "web", "--emulator", str(frozen.state_dir), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["loadBalancing"] == [{
        "loadBalancer": f"{rg}/gw", "rule": "web", "probe": "health", "up": 3, "down": 0, "downInstances": [],
        "adminDown": [], "gateway": True}]

    world = world_behind_a_load_balancer(2, seed=4)  # in process: the same reads, and the plan
    world.app_gateways.put("rg", "gw", gw_body("rg"))
    world.scale_sets.put("rg", "front", in_pool(2, "rg", gateway=True))
    world.clock.advance(900)
    prepared = upgrade.prepare(WorldGateway(world, "rg", "front"), Journal(tmp_path / "j.db"), CONN,
                               ImageChange(version=NEW), make_policy(max_unavailable="1"))
    lines = [Text.from_markup(line).plain for line in plan_lines(prepared)]
    assert prepared.policy.drain == "none"
    assert "  behind application gateway rg/gw rule web (probe health): 2 Up, 0 Down" in lines, lines
    assert any("an Application Gateway has no admin state: --drain appgw takes VMs out" in line for line in lines)


# ------------------------------------------------------------------------------ traffic through a gateway
def _gateway_world(draining: bool = True) -> World:
    """Set web of 3 in Application Gateway gw's pool (probe every 5 s, 2 misses; connection draining 60 s)."""
    w = World(SimClock(0, start=1_000_000.0), seed=1)
    w.resource_groups.put("rg", "eastus")
    body = gw_body("rg")
    body["properties"]["backendHttpSettingsCollection"][0]["properties"]["connectionDraining"]["enabled"] = draining
    w.app_gateways.put("rg", "gw", body)
    w.scale_sets.put("rg", "web", in_pool(3, "rg", gateway=True))
    step(w, 900)
    return w


def _out_of_the_pool(world: World, iid: str, back: bool = False) -> None:
    """VM ``iid``'s own network configuration without the gateway's pool (what ``--drain appgw`` writes), or
    (``back``) with it again."""
    nics = world.scale_sets.get("rg", "web").vm_profile["networkProfile"]["networkInterfaceConfigurations"]
    bare = [{**n, "properties": {**n["properties"], "ipConfigurations": [
        {**c, "properties": {k: v for k, v in c["properties"].items() if k != "applicationGatewayBackendAddressPools"}}
        for c in n["properties"]["ipConfigurations"]]}} for n in nics]
    world.vms.update("rg", "web", iid, {"properties": {"networkProfileConfiguration": {
        "networkInterfaceConfigurations": nics if back else bare}}}, None, None)


def _gateway_traffic(world: World) -> str:
    return world.traffic.start({"resourceGroup": "rg", "applicationGateway": "gw", "rule": "web", "rps": 300,
                                "meanDurationSeconds": 0.2, "longLivedShare": 0.05, "longLivedSeconds": 20}).id


@pytest.mark.parametrize("draining, stop_after, cut", [
    # connection draining: the VM's requests finish for 60 s; long-lived ones left then (e^-3 of 100) are cut
    (True, 120, (4, 6)),
    # stopped 5 s into its draining: what is still in flight then (e^-0.25 of 100 long-lived) is cut
    (True, 5, (75, 82)),
    # no connection draining: leaving the pool cuts everything in flight (19 short, 100 long-lived)
    (False, 120, (115, 122)),
])
def test_traffic_through_a_gateway_drains_a_vm_out_of_its_pool(draining, stop_after, cut):
    world = _gateway_world(draining)
    tid = _gateway_traffic(world)
    step(world, 120)
    assert counts(world, tid)["failed"] == 0
    _out_of_the_pool(world, "1")
    step(world, stop_after)
    world.vms.act("rg", "web", "poweroff", ["1"])
    step(world, 200)
    c = counts(world, tid)
    assert c["failedBy"]["probe-lag"] == 0 and c["failedBy"]["no-backend"] == 0, c  # it got no new requests
    assert cut[0] <= c["failedBy"]["cut"] <= cut[1], c
    assert c["applicationGateway"] == "gw" and "loadBalancer" not in c
    assert c["backends"]["web_1"]["served"] <= 120 * 100  # nothing after it left


def test_a_vm_back_in_the_gateway_pool_while_draining_keeps_its_connections_and_gets_requests_again():
    world = _gateway_world()
    tid = _gateway_traffic(world)
    step(world, 60)
    _out_of_the_pool(world, "1")
    step(world, 30)
    before = counts(world, tid)["backends"]["web_1"]["served"]
    _out_of_the_pool(world, "1", back=True)  # 30 s into its 60 s of draining
    step(world, 120)
    c = counts(world, tid)
    # it gets requests again once the gateway has probed it (within 5 s)
    assert before + 100 * 114 <= c["backends"]["web_1"]["served"] <= before + 100 * 116
    assert world.loads[tid].leaving == {}
    assert c["failed"] == 0, c  # nothing in flight was cut: its draining ended by coming back
    with pytest.raises(ArmError, match="either a loadBalancer or an applicationGateway"):
        world.traffic.start({"resourceGroup": "rg", "rule": "web", "rps": 1})
    with pytest.raises(ArmError, match="requestRoutingRules/nope"):
        world.traffic.start({"resourceGroup": "rg", "applicationGateway": "gw", "rule": "nope", "rps": 1})
