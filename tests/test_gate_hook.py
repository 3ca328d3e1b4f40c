"""The command hook gate (rollout/gates/hook.py): a shell command per instance, one instance failing it."""

from __future__ import annotations

from tests.helpers import NEW, make_set


def test_command_hook_gate_fails_the_batch(frozen, up):
    rg = make_set(frozen, 4, name="hooked")
    code, events, err = up(rg, "--version", NEW, "--hook", "test {instance_id} != 1", "--health-timeout", "5m",
                           name="hooked")
    assert code == 1, err
    failed = next(e for e in events if e["type"] == "batch_failed")
    assert failed["instances"] == ["1"] and "hook" in failed["reasons"][0], failed["reasons"]
