"""A small client for the emulator's admin API (``/_emulator/``), standard library only.

Used by the engine's clock, the demo and the benchmarks; tests use httpx directly.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from urllib.parse import urlsplit

from vmssctl.azure import Connection
from vmssctl.errors import VmssctlError


class EmulatorError(VmssctlError):
    """The emulator's admin API could not be reached or refused a call."""


# What a kept connection the server has closed raises on its next request (nothing was read: sent again)
STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class AdminClient:
    """Calls to the emulator's admin API. ``keep``: one HTTPS connection kept from call to call (an engine's
    clock asks the time after every sleep: a TLS handshake each time was a quarter of a fleet worker's CPU),
    opened again when the emulator closed it, and closed by ``close`` (or with the client); else each call
    closes its own (a connection left open holds up the emulator's shutdown)."""

    def __init__(self, conn: Connection, keep: bool = False) -> None:
        self.keep = keep
        self.base = f"{conn.endpoint}/_emulator/"
        url = urlsplit(str(conn.endpoint))
        self._host, self._port, self._prefix = url.hostname or "127.0.0.1", url.port, url.path.rstrip("/")
        self._headers = {"Authorization": f"Bearer {conn.token}", "Content-Type": "application/json"}
        self._tls = ssl.create_default_context(cafile=conn.ca) if conn.ca else ssl.create_default_context()
        self._conn: http.client.HTTPSConnection | None = None
        self._lock = threading.Lock()

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        with self._lock:
            status, payload = self._send(method, f"{self._prefix}/_emulator/{path}", data)
        if status >= 400:
            raise EmulatorError(f"the emulator refused {method} /_emulator/{path}: HTTP {status}")
        try:
            return json.loads(payload)
        except ValueError as e:
            raise EmulatorError(f"the emulator answered {method} /_emulator/{path} with no JSON ({e})") from None

    def _send(self, method: str, target: str, data: bytes | None) -> tuple[int, bytes]:
        kept = self._conn is not None
        conn = self._conn or http.client.HTTPSConnection(self._host, self._port, context=self._tls, timeout=30)
        self._conn = None
        try:
            conn.request(method, target, body=data, headers=self._headers)
            r = conn.getresponse()
            payload = r.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            if kept and isinstance(e, STALE):  # the emulator closed the kept connection (idle, or restarted)
                return self._send(method, target, data)
            raise EmulatorError(f"the emulator at {self.base.removesuffix('/_emulator/')} is not answering "
                                f"({e}); is it still running?") from None
        if self.keep:
            self._conn = conn
        else:
            conn.close()
        return r.status, payload

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def clock(self) -> dict:
        return self.call("GET", "clock")

    def advance(self, seconds: float) -> dict:
        return self.call("POST", "clock", {"advance": seconds})

    def stats(self, since: float | None = None, records: bool = False) -> dict:
        query = "&".join(([f"since={since}"] if since is not None else []) + (["records=true"] if records else []))
        return self.call("GET", "stats" + (f"?{query}" if query else ""))
