"""The HTTP probe gate (rollout/gates/probe.py): a real HTTP server, one instance answering 500, in a rollout."""

from __future__ import annotations

from tests.helpers import NEW, make_set


def test_http_probe_gate(frozen, up):
    import http.server
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(500 if self.path.endswith("/2") else 200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        rg = make_set(frozen, 4, name="probed")
        url = f"http://127.0.0.1:{server.server_port}/health/{{instance_id}}"
        code, events, err = up(rg, "--version", NEW, "--probe-url", url, "--health-timeout", "5m", name="probed")
    finally:
        server.shutdown()
    assert code == 1, err
    failed = next(e for e in events if e["type"] == "batch_failed")
    assert failed["instances"] == ["2"] and "probe" in failed["reasons"][0] and "500" in failed["reasons"][0]
    assert [len(e["instances"]) for e in events if e["type"] == "batch_started"] == [1, 1, 1]
