"""The engine's sense of time: the wall clock for Azure, the simulated clock for the emulator.

Against an emulator whose clock is frozen (time scale 0), sleeping advances the emulator's
clock instead of waiting, which makes whole rollouts deterministic and fast in tests.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from typing import Protocol

from vmssctl.azure import Connection


class Clock(Protocol):
    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


class EmulatorClock:
    """Simulated time, read from and (when frozen) driven through the emulator's admin API."""

    def __init__(self, conn: Connection) -> None:
        self._url = f"{conn.endpoint}/_emulator/clock"
        self._headers = {"Authorization": f"Bearer {conn.token}", "Content-Type": "application/json"}
        self._tls = ssl.create_default_context(cafile=conn.ca) if conn.ca else ssl.create_default_context()
        self._sync(self._call("GET"))

    def _call(self, method: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self._url, data=data, method=method, headers=self._headers)
        with urllib.request.urlopen(req, context=self._tls, timeout=30) as r:
            return json.loads(r.read())

    def _sync(self, reply: dict) -> None:
        self.scale = float(reply["scale"])
        self._sim, self._real = float(reply["now"]), time.monotonic()

    def now(self) -> float:
        return self._sim + (time.monotonic() - self._real) * self.scale

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self.scale == 0:
            self._sync(self._call("POST", {"advance": seconds}))
        else:
            time.sleep(seconds / self.scale)
            self._sync(self._call("GET"))


def clock_for(conn: Connection) -> Clock:
    if not conn.is_emulator:
        return RealClock()
    try:
        return EmulatorClock(conn)
    except (OSError, ValueError, KeyError):  # an ARM endpoint that is not our emulator
        return RealClock()
