"""Servers the gate tests measure: a small exporter of per-instance error ratios (Prometheus' text format) and
per-instance JSON status."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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
