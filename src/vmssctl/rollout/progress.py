"""Where a rollout stands: computed once per engine turn, rendered by every view.

The live terminal view, ``-o json``, ``vmssctl rollout status`` and the dashboard all show
this one object (the engine stores the latest in the journal), so they cannot disagree:
batch n of m counts the batches of the current phase, the floor is the one fixed when the
plan was approved, elapsed time leaves out the time no process was running the rollout,
and times are marked simulated when they come from the emulator's clock.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field

DEFAULT_BATCH_SECONDS = 240.0  # a typical Linux VM upgrade incl. health grace, until one is measured
HISTORY_POINTS = 240  # samples of healthy-over-time kept for the timeline


@dataclass(frozen=True)
class Progress:
    rollout_id: str
    scale_set: str
    phase: str  # forward | rollback
    state: str  # the journal's rollout state: running, paused, rolling_back, succeeded, ...
    target: str
    batch_no: int  # batches of this phase started so far (the one in flight included)
    batches_total: int  # started + still planned
    done: int  # instances of this phase whose batch has been judged
    total: int  # instances this phase touches
    healthy: int
    capacity: int
    floor: int
    elapsed: float  # active seconds: interruptions (no process running it) left out
    eta: float | None  # seconds left; None when nothing has been measured and nothing is planned
    simulated: bool  # times are the emulator's simulated seconds
    now: float
    current: tuple[str, ...] = ()  # the batch in flight
    history: tuple[tuple[float, int], ...] = field(default=(), compare=False)  # (time, healthy) samples
    requests: tuple[int, int] | None = None  # users' requests and failed ones in the judged batches (a gate's)

    @property
    def paused(self) -> bool:
        return self.state == "paused"

    @property
    def verb(self) -> str:
        return "rolled back" if self.phase == "rollback" else "upgraded"

    @property
    def unjudged(self) -> str:
        """The batch in flight, said beside the judged count (``n/m upgraded``) so that a rollout that stopped
        mid-batch does not seem to have touched fewer VMs than it did: "" when none."""
        if not self.current:
            return ""
        live = self.state in ("running", "rolling_back", "paused")
        return f" (+{len(self.current)} {'in flight' if live else 'started, never judged'})"

    @property
    def below_floor(self) -> bool:
        return self.healthy < self.floor

    def to_json(self) -> dict:
        d = asdict(self)
        d["current"] = list(self.current)
        d["history"] = [list(p) for p in self.history]
        d["requests"] = list(self.requests) if self.requests is not None else None
        return d

    @classmethod
    def from_json(cls, d: dict) -> Progress:
        d = dict(d)
        d["current"] = tuple(d.get("current") or ())
        d["history"] = tuple((float(t), int(h)) for t, h in d.get("history") or ())
        d["requests"] = tuple(d["requests"]) if d.get("requests") else None
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def eta(durations: list[float], open_elapsed: float | None, batches_left: int, pause: float,
        poll: float = 10.0) -> float:
    """Seconds left: what the batch in flight still needs, then each planned batch, with the pauses between.

    ``durations`` are the batches measured so far (their median is the estimate); ``open_elapsed`` is how long
    the batch in flight has run (None when none is). A batch running late still needs at least one more
    ``poll`` to be judged, so the ETA never shows 0 while work is left.
    """
    each = statistics.median(durations) if durations else DEFAULT_BATCH_SECONDS
    in_flight = max(poll, each - open_elapsed) if open_elapsed is not None else 0.0
    batches = batches_left + (1 if open_elapsed is not None else 0)
    return in_flight + batches_left * each + max(0, batches - 1) * pause


def sample(history: tuple[tuple[float, int], ...], now: float, healthy: int) -> tuple[tuple[float, int], ...]:
    """``history`` with (now, healthy) added; thinned to every other point when full, so it stays bounded
    while still spanning the whole rollout."""
    if history and history[-1][1] == healthy and len(history) > 1 and history[-2][1] == healthy:
        history = history[:-1]  # a flat stretch needs only its two ends
    points = (*history, (round(now, 1), healthy))
    if len(points) > HISTORY_POINTS:
        points = (*points[:-1:2], points[-1])
    return points


def clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def summary(p: Progress) -> str:
    """The one-line figure every view shows (terminal, dashboard, status)."""
    sim = " (simulated)" if p.simulated else ""
    return (f"batch {p.batch_no} of {p.batches_total}, {p.done}/{p.total} {p.verb}{p.unjudged}, "
            f"healthy {p.healthy}/{p.capacity} (floor {p.floor}), "
            + (f"requests {p.requests[0]:,} ({p.requests[1]:,} failed), " if p.requests is not None else "")
            + f"elapsed {clock_text(p.elapsed)}, eta {clock_text(p.eta)}{sim}")
