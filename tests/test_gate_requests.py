"""The requests gate (rollout/gates/requests.py): users' requests over a batch's window, the share that failed
against a limit; from Prometheus or the emulator's traffic. Tables for its settings and verdicts, a fake
Prometheus API for its queries, and the CLI on the emulator: a drained rollout records each batch's requests
and passes, an undrained one loses requests and the gate fails it."""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers import NEW, set_behind_a_load_balancer
from vmssctl.errors import UsageError
from vmssctl.model import ImageRef, Instance
from vmssctl.rollout.gates import BAD, GOOD, WAIT, Context, Deps, GateError, from_spec
from vmssctl.rollout.gates.requests import RequestsGate

PROM = {"kind": "requests", "address": "http://127.0.0.1:9", "total": "sum(increase(http_total[{window}s]))",
        "failed": 'sum(increase(http_total{code=~"5.."}[{window}s]))'}


@pytest.mark.parametrize("spec, message", [
    ({**PROM, "source": "graphite"}, "source 'graphite' is not one of prometheus, emulator"),
    ({**PROM, "max_failed": "150%"}, "max_failed '150%' is not a percentage"),
    ({**PROM, "min_window": "3h"}, "min_window '3h' is not a duration"),
    ({k: v for k, v in PROM.items() if k != "total"}, "total"),
    ({**PROM, "address": "ftp://x"}, "is not an http(s) URL"),
    ({"kind": "requests", "source": "emulator", "load_balancer": "no-slash"}, "is not RESOURCE_GROUP/NAME"),
    ({"kind": "requests", "source": "emulator"}, "needs one of load_balancer or application_gateway"),
    ({"kind": "requests", "source": "emulator", "load_balancer": "rg/lb", "application_gateway": "rg/gw"},
     "needs one of load_balancer or application_gateway"),
    ({**PROM, "query": "x"}, "unknown setting(s) query"),
])
def test_bad_requests_gate_settings_are_refused(spec, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_spec(spec)


def _inst(i: int) -> Instance:
    return Instance(str(i), 0, 0, None, "running", "succeeded", None, True, ImageRef("p", "o", "s", "1.0.0"))


@pytest.mark.parametrize("settings, counts, now, state, reason", [
    ({"min_window": "60s"}, (1000.0, 0.0), 130.0, WAIT, "30s of the 60s window measured"),
    ({}, (1000.0, 0.0), 130.0, GOOD, "0 of 1,000 requests failed (0.000%) in 30s"),
    ({"max_failed": "1%"}, (1000.0, 10.0), 130.0, GOOD, "10 of 1,000 requests failed (1.000%) in 30s"),
    ({"max_failed": "1%"}, (1000.0, 11.0), 130.0, BAD, "11 of 1,000 requests failed (1.100%) in 30s, more than"),
    ({}, (0.0, 0.0), 130.0, GOOD, "0 of 0 requests failed"),  # no traffic: nothing lost
    ({}, GateError("Prometheus refused the query"), 130.0, WAIT, "requests: Prometheus refused the query"),
])
def test_requests_gate_verdicts(monkeypatch, settings, counts, now, state, reason):
    gate = from_spec({**PROM, **settings})
    assert isinstance(gate, RequestsGate)

    def take(since: float, until: float) -> tuple[float, float]:
        assert (since, until) == (100.0, now)
        if isinstance(counts, Exception):
            raise counts
        return counts
    monkeypatch.setattr(gate, "_counts", take)
    verdicts = gate.check(Context("rg", "web", 2, now, started=100.0), [_inst(0), _inst(1)])
    assert {v.state for v in verdicts.values()} == {state}
    assert reason in (verdicts["0"].reason or ""), verdicts["0"].reason
    if state != WAIT:
        assert verdicts["0"].figure == {"gate": "requests", "requests": round(counts[0]), "failed": round(counts[1]),
                                        "ratio": counts[1] / counts[0] if counts[0] else 0.0, "seconds": 30}


def test_the_prometheus_source_asks_over_the_batch_window():
    asked: list[str] = []

    class Api(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["query"][0]
            asked.append(query)
            value = "7" if "5.." in query else "1400"
            body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {}, "value": [0, value]}]}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gate = from_spec({**PROM, "address": f"http://127.0.0.1:{server.server_address[1]}", "max_failed": "1%"})
        verdict = gate.check(Context("rg", "web", 1, 1310.0, started=1000.0), [_inst(0)])["0"]
    finally:
        server.shutdown()
    assert asked == ["sum(increase(http_total[310s]))", 'sum(increase(http_total{code=~"5.."}[310s]))']
    assert verdict.state == GOOD and verdict.figure["failed"] == 7 and verdict.figure["requests"] == 1400


def test_the_emulator_source_needs_the_emulator():
    gate = from_spec({"kind": "requests", "source": "emulator", "load_balancer": "rg/lb"}, deps=Deps())
    verdict = gate.check(Context("rg", "web", 1, 200.0, started=100.0), [_inst(0)])["0"]
    assert verdict.state == WAIT and "needs a rollout on the emulator" in (verdict.reason or "")


def test_each_batch_records_its_requests_and_a_rollout_that_loses_them_fails_the_gate(frozen, up, tmp_path):
    rg, _ = set_behind_a_load_balancer(frozen, 4)
    tid = frozen.admin("POST", "traffic", {"resourceGroup": rg, "loadBalancer": "lb", "rule": "web", "rps": 40})["id"]
    frozen.admin("POST", "clock", {"advance": 60})
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[[gates]]\nkind = "requests"\nsource = "emulator"\nload_balancer = "{rg}/lb"\n'
                      'max_failed = "0%"\n')
    try:
        code, events, err = up(rg, "--version", NEW, "--policy", str(policy), "--drain-timeout", "15s",
                               "--max-unavailable", "2")
        assert code == 0, err
        measured = [e for e in events if e["type"] == "measured"]
        assert len(measured) == sum(1 for e in events if e["type"] == "batch_succeeded") >= 2
        assert all(m["gate"] == "requests" and m["failed"] == 0 and m["requests"] > 0 for m in measured), measured
        last = [e for e in events if e["type"] == "progress"][-1]  # the progress every view shows counts them
        assert last["requests"] == [sum(m["requests"] for m in measured), 0]
        # back without a drain: the first batch loses requests in flight, the gate fails it, the rollout rolls back
        code, events, err = up(rg, "--version", "24.04.202610010", "--policy", str(policy), "--drain", "none",
                               "--max-unavailable", "2", "--rollback", "auto")
        assert code == 1, err
        failed = next(e for e in events if e["type"] == "batch_failed")
        assert "requests failed" in failed["reasons"][0] and "more than 0.000%" in failed["reasons"][0], failed
        assert next(e for e in events if e["type"] == "measured")["failed"] > 0
    finally:
        frozen.admin("POST", f"traffic/{tid}/stop")
