"""The Prometheus gate (rollout/gates/prometheus.py): a real Prometheus server (Debian's) scraping a small exporter
catches a bad canary that ARM and the health extension call healthy."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import httpx
import pytest

from tests.gate_servers import Exporter
from tests.helpers import NEW, OLD, instances, make_set

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


@pytest.fixture(scope="module")
def exporter():
    e = Exporter()
    yield e
    e.server.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prometheus(exporter, tmp_path_factory):
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.skip("Debian prometheus is not installed (make test installs it)")
    where = tmp_path_factory.mktemp("prometheus")
    config = where / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
                      f"  - job_name: vms\n    static_configs:\n      - targets: ['127.0.0.1:{exporter.port}']\n")
    port = _free_port()
    log = open(where / "prometheus.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={where / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    exporter.ratios.update({str(i): 0.0 for i in range(6)})
    deadline = time.monotonic() + 60
    while True:  # until the exporter has been scraped once
        try:
            r = httpx.get(f"{url}/api/v1/query", params={"query": 'vm_error_ratio{vm="0"}'}, timeout=2)
            if r.status_code == 200 and r.json()["data"]["result"]:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (where / "prometheus.log").read_text()[-2000:]
        time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(20)


def _wait_scraped(url: str, vm: str, value: float) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = httpx.get(f"{url}/api/v1/query", params={"query": f'vm_error_ratio{{vm="{vm}"}}'}).json()
        if r["data"]["result"] and float(r["data"]["result"][0]["value"][1]) == value:
            return
        time.sleep(0.2)
    raise AssertionError(f"prometheus never saw vm {vm} at {value}")


def test_a_prometheus_query_catches_a_bad_canary_and_rolls_back(frozen, up, prometheus, exporter):
    rg = make_set(frozen, 6)
    gate = ["--prometheus", prometheus, "--prometheus-query", 'vm_error_ratio{vm="{instance_id}"}',
            "--prometheus-success", "result < 0.05", "--prometheus-count", "2", "--prometheus-interval", "10s"]
    exporter.ratios["0"] = 0.5  # the canary serves errors although ARM and the health extension say healthy
    _wait_scraped(prometheus, "0", 0.5)
    try:
        code, events, err = up(rg, "--version", NEW, "--canary", "1", "--rollback", "auto", *gate)
    finally:
        exporter.ratios["0"] = 0.0
    assert code == 1, err
    failed = next(e for e in events if e["type"] == "batch_failed")
    assert failed["instances"] == ["0"] and 'prometheus vm_error_ratio{vm="0"} = 0.5' in failed["reasons"][0]
    assert events[-1]["type"] == "rollout_rolled_back"
    assert all(i.image.exact_version == OLD for i in instances(frozen, rg))
    _wait_scraped(prometheus, "0", 0.0)
    code, events, err = up(rg, "--version", NEW, "--canary", "1", *gate)  # all good now: it passes the gate
    assert code == 0, err
    measured = [e for e in events if e["type"] == "measured"]  # a passing gate leaves what it measured
    assert measured and all(e["gate"] == "prometheus" and "vm_error_ratio" in e["measured"] for e in measured)
    assert all(i.image.exact_version == NEW for i in instances(frozen, rg))
