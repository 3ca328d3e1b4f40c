"""The one simulated clock every emulated duration is measured on.

Simulated time is epoch seconds so timestamps look like real ARM timestamps; it runs
``scale`` times faster than the wall clock and can also be jumped forward, which is how
tests stay deterministic without sleeping.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import lru_cache


class SimClock:
    def __init__(self, scale: float = 1.0, start: float | None = None) -> None:
        if scale < 0:
            raise ValueError("time scale must be >= 0")
        self._scale = scale
        self._base_sim = time.time() if start is None else start
        self._base_real = time.monotonic()

    @property
    def scale(self) -> float:
        return self._scale

    def now(self) -> float:
        return self._base_sim + (time.monotonic() - self._base_real) * self._scale

    def _rebase(self) -> None:
        self._base_sim = self.now()
        self._base_real = time.monotonic()

    def set_scale(self, scale: float) -> None:
        if scale < 0:
            raise ValueError("time scale must be >= 0")
        self._rebase()
        self._scale = scale

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._base_sim += seconds

    def real_seconds(self, sim_seconds: float) -> float:
        """How long ``sim_seconds`` of simulated time take on the wall clock (inf when frozen)."""
        return sim_seconds / self._scale if self._scale else float("inf")


@lru_cache(maxsize=1 << 16)
def iso(ts: float) -> str:
    """ARM's timestamp format: ISO 8601 UTC with 7 fractional digits trimmed to 6. Remembered: a listing shows
    each VM's few timestamps over and over."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")
