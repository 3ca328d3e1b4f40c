"""A per-subscription ARM request budget shared by every rollout in this process.

Many parallel rollouts of a fleet would otherwise add up past Compute's per-subscription throttling and
spend their time in 429s and the SDK's back-offs. Every request of a client made with a budget first takes
a token from its subscription's bucket (reads and writes apart, as ARM counts them) and waits when there
is none. The SDK's own retry policy still handles whatever 429 comes anyway; this only paces.

Workers sharing a PostgreSQL database each take an equal share of every subscription's budget: the live
workers are counted from their heartbeats (``share``), so together they stay within it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

WRITE_METHODS = {"PUT", "PATCH", "POST", "DELETE"}


@dataclass(frozen=True)
class Budget:
    """Requests a second per subscription (burst: a second's worth, at least one)."""

    reads: float = 20.0
    writes: float = 5.0

    def __post_init__(self) -> None:
        if not (0 < self.reads <= 1000 and 0 < self.writes <= 1000):
            raise ValueError("a request budget is 0 < requests a second <= 1000")


class Bucket:
    """Tokens refilled at ``rate`` a second up to ``rate`` (one second's worth, at least one); ``take`` waits.
    Thread-safe: a waiting taker has reserved its token, so others queue behind it."""

    def __init__(self, rate: float, now: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate, self.capacity = rate, max(1.0, rate)
        self.base = rate  # the budget's rate; ``rate`` is this process's share of it
        self._now, self._sleep = now, sleep
        self._tokens, self._at = self.capacity, now()
        self._lock = threading.Lock()
        self.waited = 0.0  # seconds spent waiting for tokens, for the record

    def take(self) -> None:
        """Reserve a token, then wait until it exists: the balance may go below zero, and the refill pays it back
        (one computation, no polling loop, so float rounding can never make it spin)."""
        with self._lock:
            now = self._now()
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
            self.waited += wait
        if wait > 0:
            self._sleep(wait)


    def retune(self, rate: float) -> None:
        with self._lock:
            self.rate, self.capacity = rate, max(1.0, rate)
            self._tokens = min(self._tokens, self.capacity)


_buckets: dict[tuple[str, str], Bucket] = {}
_registry_lock = threading.Lock()
_sharers = [1]  # processes sharing every budget (live workers); 1 unless this is a worker


def bucket(subscription: str, write: bool, budget: Budget, pace: float = 1.0) -> Bucket:
    """The process-wide bucket of a subscription (shared by every client made with a budget). ``pace``: ARM's
    seconds per real second (the emulator's time scale, whose throttling counts its simulated seconds; 1 for
    Azure): the budget is spent on ARM's clock, as ARM counts."""
    key = (subscription.lower(), "writes" if write else "reads")
    with _registry_lock:
        if key not in _buckets:
            b = _buckets[key] = Bucket((budget.writes if write else budget.reads) * pace)
            b.retune(b.base / _sharers[0])
        return _buckets[key]


def share(processes: int) -> None:
    """This process takes 1/``processes`` of every subscription's budget (the workers alive now)."""
    with _registry_lock:
        _sharers[0] = max(1, processes)
        for b in _buckets.values():
            b.retune(b.base / _sharers[0])
