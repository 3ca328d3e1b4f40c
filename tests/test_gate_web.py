"""The web gate (rollout/gates/web.py): a JSON status per instance, one of them not ok."""

from __future__ import annotations

import pytest

from tests.gate_servers import Exporter
from tests.helpers import NEW, make_set


@pytest.fixture(scope="module")
def exporter():
    e = Exporter()
    yield e
    e.server.shutdown()


def test_a_web_check_fails_the_instance_it_names(frozen, up, exporter):
    rg = make_set(frozen, 4)
    exporter.ok["2"] = False
    try:
        code, events, err = up(rg, "--version", NEW, "--batch-size", "2", "--web-url",
                               f"http://127.0.0.1:{exporter.port}/status/{{instance_id}}", "--web-jsonpath",
                               "$.checks.ok", "--health-timeout", "6m")
    finally:
        exporter.ok.pop("2")
    assert code == 1, err
    failed = next(e for e in events if e["type"] == "batch_failed")
    assert failed["instances"] == ["2"] and "$.checks.ok = False" in failed["reasons"][0], failed["reasons"]
