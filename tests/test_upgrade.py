"""`vmssctl upgrade` end to end against the emulator (frozen clock, driven by the engine's sleeps)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from tests.conftest import cli
from tests.helpers import NEW, OLD, instances, make_set, record
from vmssctl.cli import main
from vmssctl.emulator.server import demo_scale_set


def batches(events: list[dict]) -> list[list[str]]:
    return [e["instances"] for e in events if e["type"] == "batch_started"]


def test_platform_version_by_batch_keeps_the_floor(frozen, up):
    rg = make_set(frozen, 10)
    t0 = frozen.now()
    code, events, err = up(rg, "--version", NEW, "--batch-size", "3")
    assert code == 0, err
    assert events[0]["type"] == "plan" and events[0]["plan"]["floor"] == 7
    assert [len(b) for b in batches(events)] == [3, 3, 3, 1]
    assert events[-1]["type"] == "rollout_succeeded" and events[-1]["upgraded"] == 10
    insts = instances(frozen, rg)
    assert all(i.latest_model and i.healthy and i.image.exact_version == NEW for i in insts)
    rec = record(frozen, rg, t0)
    assert rec["minHealthy"] >= 7 and rec["minHealthy"] == 7  # used the budget, never went below it
    assert set(rec["upgrades"].values()) == {1}
    assert not frozen.client().virtual_machine_scale_sets.get(rg, "web").tags.get("vmssctl-rollout")


def test_sku_change_with_latest(frozen, up):
    rg = make_set(frozen, 4)
    frozen.admin("POST", "images", {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "minimal",
                                    "version": "24.04.202611150"})
    code, events, err = up(rg, "--sku", "minimal", "--version", "latest")
    assert code == 0, err
    assert [len(b) for b in batches(events)] == [1, 1, 1, 1]  # small sets go one at a time
    assert {(i.image.sku, i.image.exact_version) for i in instances(frozen, rg)} == {("minimal", "24.04.202611150")}


def gallery(emu, rg: str, version: str) -> str:
    return (f"/subscriptions/{emu.subscription}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/g/images/"
            f"web/versions/{version}")


def test_gallery_image_id(frozen, up):
    rg = frozen.group()
    body = demo_scale_set(5, image={"id": gallery(frozen, rg, "1.0.0")})
    frozen.client().virtual_machine_scale_sets.begin_create_or_update(rg, "web", body, polling=False)
    frozen.admin("POST", "clock", {"advance": 900})
    code, events, err = up(rg, "--image-id", gallery(frozen, rg, "2.0.0"), "--batch-size", "3",
                           "--max-unavailable", "2")
    assert code == 0, err
    assert [len(b) for b in batches(events)] == [2, 2, 1]  # never more than 2 down at once
    assert {i.image.id for i in instances(frozen, rg)} == {gallery(frozen, rg, "2.0.0")}


def test_custom_uri_by_fault_domain(frozen, up):
    rg = frozen.group()
    body = demo_scale_set(10)
    storage = body["properties"]["virtualMachineProfile"]["storageProfile"]
    del storage["imageReference"]
    storage["osDisk"] = {"createOption": "FromImage", "image": {"uri": "https://acct.blob.core.windows.net/v/a.vhd"}}
    frozen.client().virtual_machine_scale_sets.begin_create_or_update(rg, "web", body, polling=False)
    frozen.admin("POST", "clock", {"advance": 900})
    code, events, err = up(rg, "--custom-uri", "https://acct.blob.core.windows.net/v/b.vhd", "--by", "fault-domain")
    assert code == 0, err
    by_id = {i.instance_id: i for i in instances(frozen, rg)}
    for batch in batches(events):
        assert len({by_id[i].fault_domain for i in batch}) == 1
    assert len(batches(events)) == 5
    assert {i.image.uri for i in by_id.values()} == {"https://acct.blob.core.windows.net/v/b.vhd"}


def test_by_update_domain_with_canary(frozen, up):
    rg = make_set(frozen, 10)
    code, events, err = up(rg, "--version", NEW, "--by", "update-domain", "--canary", "1")
    assert code == 0, err
    got = batches(events)
    assert len(got[0]) == 1
    by_id = {i.instance_id: i for i in instances(frozen, rg)}
    for batch in got[1:]:
        assert len({by_id[i].update_domain for i in batch}) == 1
    assert sorted(i for b in got for i in b) == sorted(by_id)


def test_by_zone(frozen, up):
    rg = make_set(frozen, 6, zones=["1", "2", "3"])
    code, events, err = up(rg, "--version", NEW, "--by", "zone")
    assert code == 0, err
    by_id = {i.instance_id: i for i in instances(frozen, rg)}
    assert [sorted({by_id[i].zone for i in b}) for b in batches(events)] == [["1"], ["2"], ["3"]]


def test_batch_percent_and_explicit_instances(frozen, up):
    rg = make_set(frozen, 10)
    code, events, err = up(rg, "--version", NEW, "--instances", "3,7,9", "--batch-percent", "20")
    assert code == 0, err
    assert batches(events) == [["3", "7"], ["9"]]
    latest = {i.instance_id for i in instances(frozen, rg) if i.latest_model}
    assert latest == {"3", "7", "9"}
    # re-running without an image finishes the instances still behind
    code, events, err = up(rg)
    assert code == 0, err
    assert all(i.latest_model for i in instances(frozen, rg))


def test_dry_run_changes_nothing(frozen, up):
    rg = make_set(frozen, 5)
    before = frozen.stats()["requests"]["writes"]
    code, events, err = up(rg, "--version", NEW, "--dry-run", "--canary", "1")
    assert code == 0, err
    assert events[0]["type"] == "plan" and events[0]["plan"]["batches"][0] == ["0"]
    assert frozen.stats()["requests"]["writes"] == before
    assert not any(i.latest_model is False for i in instances(frozen, rg))


def test_bad_image_stops_after_the_canary_and_rolls_back(frozen, up):
    rg = make_set(frozen, 10)
    t0 = frozen.now()
    with frozen.fault("unhealthy", version="6.6.6"):
        code, events, err = up(rg, "--version", "6.6.6", "--canary", "1", "--rollback", "auto",
                               "--health-timeout", "5m")
    assert code == 1, err
    kinds = [e["type"] for e in events]
    assert "batch_failed" in kinds and "rollback_started" in kinds and kinds[-1] == "rollout_rolled_back"
    failed = next(e for e in events if e["type"] == "batch_failed")
    assert failed["instances"] == ["0"] and "HealthState/unhealthy" in failed["reasons"][0]
    assert len([e for e in events if e["type"] == "batch_started" and e["phase"] == "forward"]) == 1
    insts = instances(frozen, rg)
    assert all(i.healthy and i.latest_model and i.image.exact_version == OLD for i in insts)
    rec = record(frozen, rg, t0)
    assert rec["minHealthy"] >= 8 and rec["upgrades"] == {"0": 2}


def test_provisioning_failure_names_instance_and_code(frozen, up):
    rg = make_set(frozen, 4, name="pf")
    with frozen.fault("fail", scaleSet="pf", instanceId="2", version=NEW):
        code, events, _err = up(rg, "--version", NEW, name="pf")
    assert code == 1
    failed = next(e for e in events if e["type"] == "batch_failed")
    assert failed["instances"] == ["2"] and "OSProvisioningTimedOut" in failed["reasons"][0]
    assert events[-1]["type"] == "rollout_failed" and "instance 2" in events[-1]["error"]
    assert [len(b) for b in batches(events)] == [1, 1, 1]  # stopped at the failing batch


def test_etag_conflict_halts_without_overwriting(frozen, up, monkeypatch):
    from vmssctl import azure

    rg = make_set(frozen, 3)
    real_update = azure.ScaleSetApi.update

    def concurrent_edit_first(self, etag, image=None, tags=None):
        self.client.virtual_machine_scale_sets.begin_update(rg, "web", {"tags": {"edited-by": "someone"}},
                                                            polling=False)
        monkeypatch.setattr(azure.ScaleSetApi, "update", real_update)
        return real_update(self, etag, image=image, tags=tags)

    monkeypatch.setattr(azure.ScaleSetApi, "update", concurrent_edit_first)
    code, events, _err = up(rg, "--version", NEW)
    assert code == 1
    assert "etag" in events[-1]["error"] and "nothing was overwritten" in events[-1]["error"]
    vmss = frozen.client().virtual_machine_scale_sets.get(rg, "web")
    assert vmss.tags == {"edited-by": "someone"}
    assert vmss.virtual_machine_profile.storage_profile.image_reference.version == OLD


@pytest.mark.parametrize("flags, needle", [
    (["-n", "no-such-set", "--version", NEW], "not found"),
    (["--version", "22.04.x"], "--version"),
    (["--custom-uri", "ftp://x/y.vhd"], "--custom-uri"),
    (["--image-id", "/subscriptions/x/oops"], "--image-id"),
    (["--version", NEW, "--image-id", "/x"], "one image kind"),
    (["--version", NEW, "--instances", "3,99"], "unknown instance id"),
    (["--version", NEW, "--batch-size", "2", "--by", "zone"], "--by batch"),
    (["--version", NEW, "--batch-size", "2", "--batch-percent", "10"], "either"),
    (["--version", NEW, "--max-unavailable", "lots"], "--max-unavailable"),
    (["--version", NEW, "--pause", "soon"], "--pause"),
    (["--version", NEW, "--by", "rack"], "invalid choice"),
    (["--image-id", "/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/images/x"], "in place"),
    (["--version", NEW, "--policy", "/nonexistent.toml"], "does not exist"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(frozen, capsys, tmp_path, flags, needle):
    rg = make_set(frozen, 4) if "rg" not in flags else flags
    before = frozen.stats()["requests"]["writes"]
    args = ["upgrade", "-g", rg, "-n", "web", "--emulator", str(frozen.state_dir), "--journal",
            str(tmp_path / "j.sqlite"), "--yes"]
    code = main(args + flags)
    _out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and needle in err, err
    assert "Traceback" not in err
    assert frozen.stats()["requests"]["writes"] == before


def test_malformed_policy_file(frozen, capsys, tmp_path):
    rg = make_set(frozen, 2)
    bad = tmp_path / "p.toml"
    for text, needle in (("by = ", "not valid TOML"), ("colour = 'red'", "unknown setting"),
                         ("canary = 'x'", "whole number"), ("pause = 'later'", "--pause")):
        bad.write_text(text)
        code = main(["upgrade", "-g", rg, "-n", "web", "--emulator", str(frozen.state_dir), "--version", NEW,
                     "--policy", str(bad), "--yes", "--journal", str(tmp_path / "j.sqlite")])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_policy_file_is_used(frozen, up, tmp_path):
    rg = make_set(frozen, 6)
    policy = tmp_path / "rollout.toml"
    policy.write_text('[rollout]\nby = "batch"\nbatch_size = 2\ncanary = 1\npause = "1m"\n')
    code, events, err = up(rg, "--version", NEW, "--policy", str(policy))
    assert code == 0, err
    assert [len(b) for b in batches(events)] == [1, 2, 2, 1]
    assert len([e for e in events if e["type"] == "soak"]) == 3


def test_without_a_terminal_and_without_yes_it_refuses(frozen, capsys, tmp_path):
    rg = make_set(frozen, 2)
    before = frozen.stats()["requests"]["writes"]
    code = main(["upgrade", "-g", rg, "-n", "web", "--emulator", str(frozen.state_dir), "--version", NEW,
                 "--journal", str(tmp_path / "j.sqlite")])
    err = capsys.readouterr().err
    assert code == 2 and "--yes" in err
    assert frozen.stats()["requests"]["writes"] == before


def test_nothing_to_do(frozen, up):
    rg = make_set(frozen, 2)
    code, events, _err = up(rg, "--version", OLD)
    assert code == 0 and events[0]["type"] == "nothing_to_do"


def test_rollout_list_and_status(frozen, up, capsys, tmp_path):
    rg = make_set(frozen, 2)
    code, events, _ = up(rg, "--version", NEW)
    rid = events[-1]["rollout"]
    main(["rollout", "list", "--journal", str(tmp_path / "journal.sqlite"), "-o", "json"])
    assert rid in [r["id"] for r in json.loads(capsys.readouterr().out)]
    code = main(["rollout", "status", rid, "--journal", str(tmp_path / "journal.sqlite"), "-o", "json"])
    status = json.loads(capsys.readouterr().out)
    assert code == 0 and status["rollout"]["state"] == "succeeded" and len(status["batches"]) == 2
    assert Counter(e["type"] for e in status["events"])["batch_succeeded"] == 2
    assert main(["rollout", "status", "r-nope", "--journal", str(tmp_path / "journal.sqlite")]) == 2


@pytest.fixture(scope="module")
def flaky(tmp_path_factory):
    """A frozen emulator that fails 10% of requests with 500/503 and throttles another 10% with 429."""
    from tests.conftest import start_emulator

    e = start_emulator(tmp_path_factory.mktemp("flaky"), "--time-scale", "0", "--throttle", "off",
                       "--error-rate", "0.1", "--throttle-rate", "0.1", "--seed", "3")
    yield e
    e.stop()


def test_random_5xx_and_429_at_ten_percent_still_complete(flaky, tmp_path, capsys, monkeypatch):
    import functools

    from vmssctl import azure

    # (the command imports the SDK's client when it runs: patched where it lives)
    monkeypatch.setattr(azure, "compute_client", functools.partial(azure.compute_client, retry_backoff_factor=0.05))
    rg = make_set(flaky, 6)
    t0 = flaky.now()
    code, _events, err = cli(capsys, "upgrade", "-g", rg, "-n", "web", "--emulator", str(flaky.state_dir),
                            "--journal", str(tmp_path / "j.sqlite"), "-o", "json", "--yes", "--version", NEW,
                            "--batch-size", "2")
    assert code == 0, err
    stats = flaky.stats(since=t0)
    assert stats["requests"]["injectedErrors"] >= 5
    rec = stats["scaleSets"][f"{rg}/web"]
    assert rec["minHealthy"] >= 4 and set(rec["upgrades"].values()) == {1}
    assert all(i.latest_model and i.healthy for i in instances(flaky, rg))


def test_show_instances_and_heatmap_commands(frozen, capsys):
    rg = make_set(frozen, 3)
    base = ["-g", rg, "-n", "web", "--emulator", str(frozen.state_dir)]
    assert main(["show", *base, "-o", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["capacity"] == 3 and shown["image"]["kind"] == "platform" and shown["upgrade_mode"] == "Manual"
    assert main(["instances", *base, "-o", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [i["instance_id"] for i in listed] == ["0", "1", "2"] and listed[0]["state"] == "current"
    assert main(["heatmap", *base]) == 0
    out = capsys.readouterr().out
    assert "FD0" in out and "UD" in out
    assert main(["show", "-g", rg, "-n", "nope", "--emulator", str(frozen.state_dir)]) == 2
    err = capsys.readouterr().err
    assert "ResourceNotFound" in err and len(err.strip().splitlines()) == 1


def test_a_flexible_set_over_https_show_heatmap_in_place_and_surge(frozen, up, capsys):
    """A Flexible set through the CLI and the SDK: listed by VM name, a zone x fault domain heatmap, upgraded in
    place by fault domain, then by surge, never below its floor (the emulator's availability record)."""
    rg = make_set(frozen, 6, flexible=True, fault_domains=2)
    base = ["-g", rg, "-n", "web", "--emulator", str(frozen.state_dir)]
    assert main(["instances", *base, "-o", "json"]) == 0
    names = [i["instance_id"] for i in json.loads(capsys.readouterr().out)]
    assert len(names) == 6 and all(n.startswith("web_") for n in names)
    assert main(["heatmap", *base]) == 0
    out = capsys.readouterr().out
    assert "zone x fault domain" in out and "FD1" in out and "UD0" not in out
    code, _events, err = up(rg, "--version", NEW, "--by", "update-domain")
    assert code == 2 and "no update domains" in err
    t0 = frozen.now()
    code, events, err = up(rg, "--version", NEW, "--by", "fault-domain")
    assert code == 0, err
    assert sorted(i for b in batches(events) for i in b) == sorted(names)
    rec = record(frozen, rg, t0)
    assert rec["minHealthy"] >= 3 and rec["upgrades"] == {n: 1 for n in names}
    t0 = frozen.now()
    code, events, err = up(rg, "--version", OLD, "--strategy", "surge", "--max-surge", "2")
    assert code == 0, err
    vms = instances(frozen, rg)
    assert len(vms) == 6 and not set(names) & {i.instance_id for i in vms}  # every VM replaced by a new one
    assert all(i.image.exact_version == OLD and i.healthy for i in vms) and record(frozen, rg, t0)["minHealthy"] >= 6


def test_large_set_polls_the_summary_while_vms_are_rebuilt(frozen, up):
    rg = make_set(frozen, 120)
    t0 = frozen.now()
    before = frozen.stats()["requests"]["byOperation"].get("VirtualMachineScaleSets_GetInstanceView", 0)
    code, _events, err = up(rg, "--version", NEW, "--batch-percent", "50")
    assert code == 0, err
    stats = frozen.stats(since=t0)
    assert stats["requests"]["byOperation"]["VirtualMachineScaleSets_GetInstanceView"] > before
    rec = stats["scaleSets"][f"{rg}/web"]
    assert rec["minHealthy"] >= 60 and set(rec["upgrades"].values()) == {1} and len(rec["upgrades"]) == 120


def test_an_automatic_set_is_refused_without_allow_automatic(frozen, up):
    rg = make_set(frozen, 3, mode="Automatic")
    before = frozen.stats()["requests"]["writes"]
    code, _events, err = up(rg, "--version", NEW)
    assert code == 2 and "--allow-automatic" in err and len(err.strip().splitlines()) == 1
    assert frozen.stats()["requests"]["writes"] == before


def test_a_rolling_set_goes_through_azures_rolling_upgrade_and_a_failing_probe_cancels_it(frozen, up):
    """Over HTTPS with the SDK: vmssctl changes the model, Azure's rolling upgrade moves the VMs batch by batch,
    vmssctl watches (rollingUpgrades/latest + one listing a poll) and gates; a failing probe cancels Azure's
    upgrade and the rollback puts the old image back, which Azure rolls out the same way."""
    import http.server
    import threading

    bad = "24.04.202612001"

    class Health(http.server.BaseHTTPRequestHandler):  # the new image's VMs answer 500 from the second batch on
        def do_GET(self) -> None:
            iid = int(self.path.rsplit("/", 1)[-1])
            self.send_response(500 if iid >= 2 else 200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    rg = make_set(frozen, 10, mode="Rolling")
    t0 = frozen.now()
    code, events, err = up(rg, "--version", NEW)
    assert code == 0, err
    assert events[0]["type"] == "plan" and events[0]["policy"]["strategy"] == "azure-rolling"
    assert [len(b) for b in batches(events)] == [2, 2, 2, 2, 2]
    assert any(e["type"] == "progress" for e in events) and record(frozen, rg, t0)["minHealthy"] >= 8
    assert all(i.image.exact_version == NEW for i in instances(frozen, rg))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/health/{{instance_id}}"
        code, events, err = up(rg, "--version", bad, "--probe-url", url, "--rollback", "auto",
                               "--health-timeout", "5m")
    finally:
        server.shutdown()
    assert code == 1, err
    kinds = [e["type"] for e in events]
    assert "azure_upgrade_cancelled" in kinds and kinds[-1] == "rollout_rolled_back", (kinds, events[-1])
    failed = next(e for e in events if e["type"] == "batch_failed")
    assert failed["instances"] == ["2", "3"] and "500" in failed["reasons"][0]
    frozen.admin("POST", "clock", {"advance": 1800})
    assert all(i.image.exact_version == NEW and i.healthy for i in instances(frozen, rg))


def test_default_azure_credential_path_against_the_emulator(frozen):
    """No static token: the same DefaultAzureCredential code path as real Azure, via managed identity."""
    import os
    import subprocess
    import sys

    rg = make_set(frozen, 2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "VMSSCTL_", "IDENTITY_", "MSI_"))}
    env.update(IDENTITY_ENDPOINT=f"{frozen.endpoint}/metadata/identity/oauth2/token",
               IDENTITY_HEADER=frozen.info["token"], REQUESTS_CA_BUNDLE=frozen.info["ca"],
               AZURE_SUBSCRIPTION_ID=frozen.subscription)
    r = subprocess.run([sys.executable, "-m", "vmssctl", "show", "-g", rg, "-n", "web", "--endpoint", frozen.endpoint,
                        "--ca", frozen.info["ca"], "-o", "json"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["capacity"] == 2
    assert frozen.info["token"] not in r.stdout + r.stderr


def test_scale_in_during_a_batch_is_not_a_failure(frozen, up, monkeypatch):
    from vmssctl.rollout import engine

    rg = make_set(frozen, 6)
    real_issue = engine.Engine._issue
    calls = []

    def issue_then_scale_in(self, batch, ids):
        real_issue(self, batch, ids)
        if not calls:  # autoscale removes a VM of the first batch while it is being upgraded
            calls.append(ids)
            self.api.client.virtual_machine_scale_sets.begin_delete_instances(
                rg, "web", {"instanceIds": [ids[0]]}, polling=False)
    monkeypatch.setattr(engine.Engine, "_issue", issue_then_scale_in)
    code, _events, err = up(rg, "--version", NEW, "--batch-size", "2")
    assert code == 0, err
    insts = instances(frozen, rg)
    assert len(insts) == 5 and all(i.latest_model and i.healthy for i in insts)


def test_arm_giving_up_mid_rollout_leaves_it_resumable(frozen, up, monkeypatch, capsys, tmp_path):
    from azure.core.exceptions import ServiceResponseError

    from vmssctl import azure

    rg = make_set(frozen, 4)
    real = azure.ScaleSetApi.instances
    calls = {"n": 0}

    def flaky(self):
        calls["n"] += 1
        if calls["n"] == 4:
            raise ServiceResponseError("connection reset by peer")
        return real(self)
    monkeypatch.setattr(azure.ScaleSetApi, "instances", flaky)
    code, events, err = up(rg, "--version", NEW)
    assert code == 1 and "resumable" in err and len(err.strip().splitlines()) == 1
    rid = events[-1]["rollout"]
    monkeypatch.setattr(azure.ScaleSetApi, "instances", real)
    code = main(["rollout", "resume", rid, "--journal", str(tmp_path / "journal.sqlite"), "--emulator",
                 str(frozen.state_dir), "-o", "json"])
    assert code == 0
    assert all(i.latest_model for i in instances(frozen, rg))


def test_a_latest_model_is_refreshed_to_a_newly_published_version_by_reimage(frozen, up):
    sku = {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "refresh"}
    frozen.admin("POST", "images", {**sku, "version": "1.0.0"})
    rg = make_set(frozen, 4, image={**sku, "version": "latest"})
    code, events, _ = up(rg, "--version", "latest")
    assert code == 0 and events[0]["type"] == "nothing_to_do"
    frozen.admin("POST", "images", {**sku, "version": "1.1.0"})  # a new image is out
    t0 = frozen.now()
    reimages = frozen.stats()["requests"]["byOperation"].get("VirtualMachineScaleSets_Reimage", 0)
    code, events, err = up(rg, "--version", "latest", "--batch-size", "2")
    assert code == 0, err
    assert events[0]["type"] == "plan" and events[0]["plan"]["batches"] == [["0", "1"], ["2", "3"]]
    stats = frozen.stats(since=t0)
    assert stats["requests"]["byOperation"].get("VirtualMachineScaleSets_Reimage") - reimages == 2  # one a batch
    assert {i.image.exact_version for i in instances(frozen, rg)} == {"1.1.0"}
    assert stats["scaleSets"][f"{rg}/web"]["minHealthy"] >= 2


def test_the_demos_estimate_is_within_a_tenth_of_the_run_and_the_next_plan_learns_from_it(tmp_path, capsys):
    """`make demo`'s rollout (20 VMs behind a load balancer, drained, canary then batches of 20 %, 30 s pauses)
    on the emulator's frozen clock: the plan's estimate is within 10 % of what the rollout then took; the next
    plan on the set estimates from what that rollout's batches measured, and is as close."""
    from tests.conftest import start_emulator
    from vmssctl.emulator.server import DEMO_RG, DEMO_VMSS

    emu = start_emulator(tmp_path / "emu", "--time-scale", "0", "--throttle", "off", "--demo")
    try:
        for version, basis in ((NEW, "the emulator's upgrade and the set's health grace"), (OLD, "as rollout r-")):
            code, events, err = cli(capsys, "upgrade", "-g", DEMO_RG, "-n", DEMO_VMSS, "--emulator",
                                    str(emu.state_dir), "--journal", str(tmp_path / "j.sqlite"), "-o", "json",
                                    "--yes", "--version", version, "--canary", "1", "--batch-percent", "20",
                                    "--pause", "30s", "--drain", "lb", "--drain-timeout", "15s")
            assert code == 0, err
            plan = next(e for e in events if e["type"] == "plan")
            took = next(e for e in events if e["type"] == "rollout_succeeded")["seconds"]
            assert basis in plan["estimateBasis"]
            assert abs(plan["estimateSeconds"] - took) <= 0.10 * took, (version, plan["estimateSeconds"], took)
    finally:
        emu.stop()


def test_the_demo_runs_clean():
    """`make demo` is the front door: it ends well, never below the floor, and says nothing on stderr (an
    emulator connection left open once made its shutdown print an uvicorn ERROR line)."""
    r = subprocess.run([sys.executable, "-m", "vmssctl", "demo", "-o", "json"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.strip() == "", r.stderr[-2000:]
    availability = next(json.loads(x) for x in r.stdout.splitlines() if '"availability"' in x)
    assert availability["minHealthy"] >= availability["floor"]
