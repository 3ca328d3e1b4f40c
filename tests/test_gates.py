"""Gates as providers: conditions and specs as tables, then a real Prometheus server (Debian's) scraping a
small exporter, and a web check, each catching a bad canary that ARM calls healthy."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.test_upgrade import NEW, OLD, instances, make_set
from vmssctl.errors import UsageError
from vmssctl.model import ImageRef, Instance
from vmssctl.rollout.gates import BAD, GOOD, WAIT, Condition, Context, Measured, build, fill, from_spec

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


@pytest.mark.parametrize("text, result, holds", [
    ("result < 0.05", 0.01, True), ("result < 0.05", 0.5, False), ("result >= 0.99 and result <= 1", 1, True),
    ("result == true", True, True), ("result == true", False, False), ("not result", False, True),
    ('result == "ok"', "ok", True), ("result < 0.05", "n/a", False), ("0 < result < 10", 5, True),
    ("result == -1", -1, True),
])
def test_conditions(text, result, holds):
    assert Condition.parse(text, "c").holds(result) is holds


@pytest.mark.parametrize("text", ["__import__('os')", "result.real", "open('x')", "result +", "x < 1", "", "1;2",
                                  "result < 1\n"])
def test_conditions_refuse_anything_but_comparisons(text):
    with pytest.raises(UsageError):
        Condition.parse(text, "c")


@pytest.mark.parametrize("spec, error", [
    ({"kind": "prometheus", "address": "http://p:9090", "query": "up", "success": "result == 1"}, None),
    ({"kind": "prometheus", "address": "ftp://p", "query": "up", "success": "result == 1"}, "http"),
    ({"kind": "prometheus", "address": "http://p:9090", "success": "result == 1"}, "query"),
    ({"kind": "prometheus", "address": "http://p:9090", "query": "up", "count": 1000}, "count"),
    ({"kind": "web", "url": "http://h/{instance_id}", "jsonpath": "$.a[0].b"}, None),
    ({"kind": "web", "url": "http://h/", "jsonpath": "a.b"}, "jsonpath"),
    ({"kind": "hook", "command": "true", "url": "x"}, "unknown"),
    ({"kind": "canary"}, "kind"),
    ("probe", "table"),
])
def test_gate_specs_are_checked_when_the_policy_is_read(spec, error):
    if error is None:
        assert from_spec(spec).kind == spec["kind"]
    else:
        with pytest.raises(UsageError, match=error):
            from_spec(spec)


def test_fields_fill_only_known_names():
    assert fill('rate(errors{vm="{instance_id}"}[1m])', {"instance_id": "7"}) == 'rate(errors{vm="7"}[1m])'


def test_measurements_follow_count_interval_and_failure_limit():
    m = Measured(Condition.parse("result < 0.1", "s"), None, interval=30, count=3, failure_limit=1)
    values = iter([0.0, 0.5, 0.0, 0.0])
    take = lambda: next(values)  # noqa: E731
    assert m.measure((1, "0"), 0, take, "q").state == WAIT        # 1 success of 3
    assert m.measure((1, "0"), 10, take, "q").state == WAIT       # within the interval: not measured again
    assert m.measure((1, "0"), 30, take, "q").state == WAIT       # 1 failure: within the limit
    assert m.measure((1, "0"), 60, take, "q").state == WAIT       # 2 successes
    assert m.measure((1, "0"), 90, take, "q").state == GOOD       # 3 successes
    strict = Measured(Condition.parse("result < 0.1", "s"), Condition.parse("result > 0.3", "f"), 1, 5, 0)
    assert strict.measure((1, "0"), 0, lambda: 0.5, "q").state == BAD  # the failure condition: at once


# ------------------------------------------------------------------------------ real servers
class Exporter:
    """Serves per-instance error ratios in Prometheus' text format, and per-instance JSON status."""

    def __init__(self) -> None:
        self.ratios: dict[str, float] = {}
        self.ok: dict[str, bool] = {}
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body = "".join(f'vm_error_ratio{{vm="{k}"}} {v}\n' for k, v in exporter.ratios.items())
                    kind = "text/plain; version=0.0.4"
                else:
                    body = json.dumps({"checks": {"ok": exporter.ok.get(self.path.rsplit("/", 1)[-1], True)}})
                    kind = "application/json"
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def exporter():
    e = Exporter()
    yield e
    e.server.shutdown()


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
    assert all(i.image.exact_version == NEW for i in instances(frozen, rg))


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


def test_policy_file_gates(tmp_path):
    from vmssctl.policy import load

    path = tmp_path / "rollout.toml"
    path.write_text('[rollout]\ncanary = 1\n\n[[gates]]\nkind = "prometheus"\naddress = "http://prom:9090"\n'
                    'query = \'sum(rate(http_errors{vm="{instance_id}"}[1m]))\'\nsuccess = "result < 0.05"\n'
                    'count = 3\ninterval = "1m"\nfailure_limit = 1\n\n[[gates]]\nkind = "web"\n'
                    'url = "http://10.0.0.{instance_id}/health"\njsonpath = "$.ok"\n')
    policy = load(str(path), {})
    assert [g.kind for g in build(policy.all_gates())] == ["prometheus", "web"]
    path.write_text('[[gates]]\nkind = "prometheus"\naddress = "http://prom:9090"\nquery = "up"\nsuccess = "rm -rf"\n')
    with pytest.raises(UsageError):
        load(str(path), {})


def test_a_gate_is_a_health_signal(frozen, up):
    rg = make_set(frozen, 3, health=False)
    code, events, err = up(rg, "--version", NEW, "--dry-run", "--web-url", "http://127.0.0.1:9/x")
    assert code == 0, err
    assert events[0]["healthSignal"] == "web check"


def _inst(i: int) -> Instance:
    return Instance(str(i), 0, 0, None, "running", "succeeded", "healthy", True, ImageRef(version="1"))


def test_a_per_batch_query_gives_every_instance_one_verdict():
    gate = from_spec({"kind": "prometheus", "address": "http://127.0.0.1:9", "query": "sum(errors)",
                      "success": "result < 1"})
    verdicts = gate.check(Context("rg", "web", 1, 0.0), [_inst(0), _inst(1)])
    assert set(verdicts) == {"0", "1"} and verdicts["0"] == verdicts["1"]
    assert verdicts["0"].state == BAD and "failed" in verdicts["0"].reason  # unreachable: an error measurement
