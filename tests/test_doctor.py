"""``vmssctl doctor``: read-only checks before a first rollout, one line each, over HTTPS through the SDK on the
emulator (whose permissions API and image catalogue stand in for Azure's)."""

from __future__ import annotations

import json

from tests.helpers import NEW, set_behind_a_load_balancer
from vmssctl.cli import main


def doctor(emu, capsys, rg: str, *flags: str) -> tuple[int, dict[str, dict]]:
    code = main(["doctor", "-g", rg, "-n", "web", "--emulator", str(emu.state_dir), "-o", "json", *flags])
    out = capsys.readouterr().out
    return code, {c["name"]: c for c in json.loads(out)}


def test_doctor_says_what_stands_in_the_way_and_what_to_do(emu, capsys):
    rg, _ = set_behind_a_load_balancer(emu, 2)
    emu.admin("POST", "images", {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server",
                                 "version": NEW})
    code, checks = doctor(emu, capsys, rg, "--version", NEW)
    assert code == 0, checks
    assert list(checks) == ["sign-in", "subscription", "scale set", "permissions", "health signal", "load balancers",
                            "drain", "image"]
    assert all(c["ok"] for c in checks.values()), checks
    assert "rule web" in checks["load balancers"]["said"] and "2 Up" in checks["load balancers"]["said"]
    # a typo in the version, a permission taken away: each a line saying what to do, exit 1, nothing written
    emu.admin("PUT", "permissions", {"deny": ["Microsoft.Compute/virtualMachineScaleSets/manualUpgrade/action",
                                              "Microsoft.Network/loadBalancers/backendAddressPools/write"]})
    try:
        code, checks = doctor(emu, capsys, rg, "--version", "24.04.202611299", "--strategy", "surge")
    finally:
        emu.admin("PUT", "permissions", {"deny": []})
    assert code == 1
    assert checks["permissions"]["ok"] is False and "manualUpgrade/action" in checks["permissions"]["said"]
    assert "Virtual Machine Contributor" in checks["permissions"]["fix"]
    assert checks["drain"]["ok"] is False and "--drain none" in checks["drain"]["fix"]
    assert checks["image"]["ok"] is False and f"newest: {NEW}" in checks["image"]["said"]
    code, checks = doctor(emu, capsys, "no-such-rg")
    assert code == 1 and checks["scale set"]["ok"] is False and "check -g and -n" in checks["scale set"]["fix"]


def test_doctor_in_a_terminal_is_a_line_each(emu, capsys):
    rg, _ = set_behind_a_load_balancer(emu, 2)
    assert main(["doctor", "-g", rg, "-n", "web", "--emulator", str(emu.state_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 7 and out.startswith("ok") and "health signal" in out
    assert main(["doctor", "-g", rg, "-n", "web", "--emulator", str(emu.state_dir), "--version", "1.2"]) == 2
    assert "version" in capsys.readouterr().err


def test_joining_the_subnet_and_pools_is_asked_for_blue_green_and_refused_as_arm_refuses_it(emu, capsys):
    """A new set joins the subnet and every pool its model names: ARM's linked access check asks the caller for
    each join action. Doctor asks the permissions API first (the subnet on itself, a pool on its load balancer);
    the emulator refuses a write naming what may not be joined with 403 LinkedAuthorizationFailed."""
    import pytest
    from azure.core.exceptions import HttpResponseError

    from vmssctl.emulator.server import demo_scale_set

    rg, _ = set_behind_a_load_balancer(emu, 2)
    code, checks = doctor(emu, capsys, rg, "--strategy", "blue-green")
    assert code == 0 and checks["joins"]["ok"] is True, checks
    assert "may join the set's 2 subnet(s) and pool(s)" in checks["joins"]["said"]
    emu.admin("PUT", "permissions", {"deny": ["Microsoft.Network/virtualNetworks/subnets/join/action"]})
    try:
        code, checks = doctor(emu, capsys, rg, "--strategy", "blue-green")
        assert code == 1 and checks["joins"]["ok"] is False
        assert "subnets/join/action on " in checks["joins"]["said"] and "Network Contributor" in checks["joins"]["fix"]
        code, checks = doctor(emu, capsys, rg)  # in place writes no network configuration: nothing to join
        assert code == 0 and "joins" not in checks
        with pytest.raises(HttpResponseError) as refused:
            emu.client().virtual_machine_scale_sets.begin_create_or_update(rg, "web2", demo_scale_set(1)).result()
        assert refused.value.error.code == "LinkedAuthorizationFailed"
        assert "subnets/join/action" in str(refused.value) and "linked scope(s)" in str(refused.value)
    finally:
        emu.admin("PUT", "permissions", {"deny": []})


def test_a_set_without_a_health_signal_is_a_line_saying_what_to_add(emu, capsys):
    from tests.helpers import make_set

    rg = make_set(emu, 2, health=False)
    code, checks = doctor(emu, capsys, rg)
    assert code == 1 and checks["health signal"]["ok"] is False
    assert "only power and provisioning state" in checks["health signal"]["said"]
    assert "Application Health extension" in checks["health signal"]["fix"]
    assert checks["load balancers"]["ok"] is None  # nothing in front: said, neither good nor bad
