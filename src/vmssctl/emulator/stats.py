"""What the emulator saw: request counts and a bounded request log.

Tests read these through ``/_emulator/stats`` to prove "few API calls" and, with the
availability record the world keeps, "zero downtime".
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

WRITE_METHODS = frozenset({"PUT", "PATCH", "POST", "DELETE"})


@dataclass
class RequestStats:
    total: int = 0
    writes: int = 0
    throttled: int = 0
    injected_errors: int = 0
    by_method: Counter = field(default_factory=Counter)
    by_operation: Counter = field(default_factory=Counter)
    by_status: Counter = field(default_factory=Counter)
    log: deque = field(default_factory=lambda: deque(maxlen=20_000))
    seq: int = 0

    def record(self, method: str, operation: str, path: str, status: int, sim_time: float) -> None:
        self.seq += 1
        self.total += 1
        self.writes += method in WRITE_METHODS and operation != "Operations_Get"
        self.by_method[method] += 1
        self.by_operation[operation] += 1
        self.by_status[str(status)] += 1
        self.log.append({"seq": self.seq, "method": method, "operation": operation, "path": path,
                         "status": status, "time": round(sim_time, 3)})

    def to_json(self) -> dict:
        return {
            "total": self.total, "writes": self.writes, "throttled": self.throttled,
            "injectedErrors": self.injected_errors, "byMethod": dict(self.by_method),
            "byOperation": dict(self.by_operation), "byStatus": dict(self.by_status), "lastSeq": self.seq,
        }

    def reset(self) -> None:
        seq = self.seq
        self.__init__()  # type: ignore[misc]
        self.seq = seq
