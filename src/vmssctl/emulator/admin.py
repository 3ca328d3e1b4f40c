"""A small client for the emulator's admin API (``/_emulator/``), standard library only.

Used by the engine's clock, the demo and the benchmarks; tests use httpx directly.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

from vmssctl.azure import Connection
from vmssctl.errors import VmssctlError


class EmulatorError(VmssctlError):
    """The emulator's admin API could not be reached or refused a call."""


class AdminClient:
    def __init__(self, conn: Connection) -> None:
        self.base = f"{conn.endpoint}/_emulator/"
        self._headers = {"Authorization": f"Bearer {conn.token}", "Content-Type": "application/json"}
        self._tls = ssl.create_default_context(cafile=conn.ca) if conn.ca else ssl.create_default_context()

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=self._headers)
        try:
            with urllib.request.urlopen(req, context=self._tls, timeout=30) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise EmulatorError(f"the emulator refused {method} /_emulator/{path}: HTTP {e.code}") from None
        except (OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise EmulatorError(f"the emulator at {self.base.removesuffix('/_emulator/')} is not answering "
                                f"({reason}); is it still running?") from None

    def clock(self) -> dict:
        return self.call("GET", "clock")

    def advance(self, seconds: float) -> dict:
        return self.call("POST", "clock", {"advance": seconds})

    def stats(self, since: float | None = None, records: bool = False) -> dict:
        query = "&".join(([f"since={since}"] if since is not None else []) + (["records=true"] if records else []))
        return self.call("GET", "stats" + (f"?{query}" if query else ""))
