"""The engine's sense of time: the wall clock for Azure, the simulated clock for the emulator.

Against an emulator whose clock is frozen (time scale 0), sleeping advances the emulator's
clock instead of waiting, which makes whole rollouts deterministic and fast in tests.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

from vmssctl.errors import VmssctlError

if TYPE_CHECKING:
    from vmssctl.azure import Connection


class Clock(Protocol):
    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...
    def close(self) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def close(self) -> None:
        pass


class EmulatorClock:
    """Simulated time, read from and (when frozen) driven through the emulator's admin API."""

    simulated = True  # every time shown from this clock is marked as simulated

    def __init__(self, conn: Connection) -> None:
        from vmssctl.emulator.admin import AdminClient

        self.admin = AdminClient(conn, keep=True)
        self._sync(self.admin.clock())

    def _sync(self, reply: dict) -> None:
        self.scale = float(reply["scale"])
        self._sim, self._real = float(reply["now"]), time.monotonic()

    def now(self) -> float:
        return self._sim + (time.monotonic() - self._real) * self.scale

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self.scale == 0:
            self._sync(self.admin.advance(seconds))
        else:
            time.sleep(seconds / self.scale)
            self._sync(self.admin.clock())

    def close(self) -> None:
        """Let the emulator's connection go (the clock's user is done with it)."""
        self.admin.close()


def clock_for(conn: Connection) -> Clock:
    if not conn.is_emulator:
        return RealClock()
    try:
        return EmulatorClock(conn)
    except (VmssctlError, KeyError, ValueError):  # an ARM endpoint that is not our emulator
        return RealClock()
