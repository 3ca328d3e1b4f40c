"""Injected faults and ARM's throttling, kept apart from the scale-set model.

Instance faults decide how an operation on an instance ends (provisioning fails, boots
but stays unhealthy, boots slowly); request faults decide whether a request is answered
at all (random 5xx, random 429, added latency); throttling is a token bucket per
subscription as ARM documents it.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field

from vmssctl.emulator.clock import SimClock
from vmssctl.emulator.validate import number

MAX_LATENCY_MS = 60_000.0  # a minute per request is already an outage

EFFECTS = ("fail", "unhealthy", "slow")
MATCH_KEYS = ("publisher", "offer", "sku", "version", "id", "uri", "scaleSet", "instanceId")


@dataclass
class FaultRule:
    """``match`` keys all have to agree (case-insensitive) for ``effect`` to apply."""

    match: dict[str, str]
    effect: str
    code: str = "OSProvisioningTimedOut"
    factor: float = 3.0

    def __post_init__(self) -> None:
        if self.effect not in EFFECTS:
            raise ValueError(f"unknown fault effect '{self.effect}' (use one of {', '.join(EFFECTS)})")
        unknown = set(self.match) - set(MATCH_KEYS)
        if unknown:
            raise ValueError(f"unknown fault match key(s) {sorted(unknown)} (use {', '.join(MATCH_KEYS)})")
        if not self.match:
            raise ValueError("a fault rule needs at least one match key")
        if not all(isinstance(v, str | int) and not isinstance(v, bool) and len(str(v)) <= 256
                   for v in self.match.values()):
            raise ValueError("fault match values must be strings of at most 256 characters")
        self.match = {k: str(v) for k, v in self.match.items()}
        if not isinstance(self.code, str) or not 0 < len(self.code) <= 64:
            raise ValueError("a fault code must be a string of 1-64 characters")
        self.factor = number({"factor": self.factor}, "factor", 0.01, 1000)

    def applies(self, facts: dict[str, str]) -> bool:
        for key, want in self.match.items():
            have = facts.get(key, "")
            if key in ("id", "uri"):
                if not have.lower().endswith(want.lower()):
                    return False
            elif have.lower() != want.lower():
                return False
        return True

    @classmethod
    def parse(cls, text: str) -> FaultRule:
        """``version=2.0.1:unhealthy``, ``instanceId=3,scaleSet=demo-vmss:fail``, ``sku=x:slow=4``."""
        matches, _, effect = text.rpartition(":")
        if not matches:
            raise ValueError(f"fault '{text}' is not MATCH:EFFECT, e.g. version=2.0.1:unhealthy")
        match = {}
        for part in matches.split(","):
            key, eq, value = part.partition("=")
            if not eq:
                raise ValueError(f"fault match '{part}' is not KEY=VALUE")
            match[key.strip()] = value.strip()
        factor = 3.0
        if effect.startswith("slow="):
            try:
                effect, factor = "slow", float(effect[5:])
            except ValueError:
                raise ValueError(f"fault '{text}': slow=FACTOR needs a number") from None
        return cls(match=match, effect=effect, factor=factor)


@dataclass
class Faults:
    rules: list[FaultRule] = field(default_factory=list)
    error_rate: float = 0.0  # share of ARM requests answered 500/503
    throttle_rate: float = 0.0  # share of ARM requests answered 429
    latency_ms: float = 0.0

    def outcome(self, facts: dict[str, str]) -> tuple[str | None, str, float]:
        """(terminal effect or None, failure code, slowness factor) for an instance operation."""
        effect, code, factor = None, "OSProvisioningTimedOut", 1.0
        for rule in self.rules:
            if rule.applies(facts):
                if rule.effect == "slow":
                    factor *= rule.factor
                elif effect is None:
                    effect, code = rule.effect, rule.code
        return effect, code, factor

    def to_json(self) -> dict:
        return {
            "rules": [asdict(r) for r in self.rules],
            "errorRate": self.error_rate,
            "throttleRate": self.throttle_rate,
            "latencyMs": self.latency_ms,
        }

    def update(self, body: dict) -> None:
        """Apply an admin-API body; validates everything before changing anything."""
        rules = self.rules
        if "rules" in body:
            rules = [FaultRule(**r) for r in body["rules"]]
        if "rules" in body and (not isinstance(body["rules"], list) or len(body["rules"]) > 100 or
                                not all(isinstance(r, dict) for r in body["rules"])):
            raise ValueError("rules must be a list of at most 100 rule objects")
        rates = {}
        for key, attr in (("errorRate", "error_rate"), ("throttleRate", "throttle_rate")):
            if key in body:
                rates[attr] = number(body, key, 0, 1)
        latency = number(body, "latencyMs", 0, MAX_LATENCY_MS) if "latencyMs" in body else self.latency_ms
        self.rules = rules
        for attr, value in rates.items():
            setattr(self, attr, value)
        self.latency_ms = latency


class RequestDice:
    """Seeded randomness for request-level faults, so a failing run can be replayed."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def roll(self, faults: Faults) -> int | None:
        if not (faults.error_rate or faults.throttle_rate):
            return None
        x = self._rng.random()
        if x < faults.throttle_rate:
            return 429
        if x < faults.throttle_rate + faults.error_rate:
            return 500 if self._rng.random() < 0.5 else 503
        return None


class TokenBucket:
    """ARM's per-subscription limiter: ``capacity`` tokens, refilled at ``rate`` a second.

    A second of whichever clock runs faster: the simulated one when the emulator runs ahead of
    real time (a client polling every 10 simulated seconds must not be throttled just because
    the emulator compresses time), the real one when it is slowed or frozen (so retries waiting
    real seconds are let through).
    """

    def __init__(self, capacity: float, rate: float, clock: SimClock | None = None) -> None:
        self.capacity = capacity
        self.rate = rate
        self.clock = clock
        self._tokens = capacity
        self._real = time.monotonic()
        self._sim = clock.now() if clock else 0.0

    def _speed(self) -> float:
        return max(1.0, self.clock.scale) if self.clock else 1.0

    def _refill(self) -> None:
        real = time.monotonic()
        sim = self.clock.now() if self.clock else 0.0
        elapsed = max(real - self._real, sim - self._sim)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._real, self._sim = real, sim

    def take(self) -> bool:
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    @property
    def remaining(self) -> int:
        self._refill()
        return int(self._tokens)

    def wait_seconds(self) -> int:
        """Real seconds until a token is back, for Retry-After (whole seconds, at least 1)."""
        self._refill()
        if not self.rate:
            return 60
        return max(1, math.ceil((1 - self._tokens) / self.rate / self._speed()))


@dataclass
class ThrottleLimits:
    """ARM's documented subscription buckets (reads 250 / 25 per s, writes 200 / 10 per s)."""

    read_capacity: float = 250
    read_rate: float = 25
    write_capacity: float = 200
    write_rate: float = 10
    enabled: bool = True

    @classmethod
    def parse(cls, text: str) -> ThrottleLimits:
        """``off`` or ``reads=250/25,writes=200/10``."""
        if text.strip().lower() in ("off", "none", "0"):
            return cls(enabled=False)
        limits = cls()
        for part in text.split(","):
            key, _, value = part.partition("=")
            cap, _, rate = value.partition("/")
            try:
                c = number({"capacity": float(cap)}, "capacity", 1, 1_000_000)
                r = number({"rate": float(rate)}, "rate", 0.001, 1_000_000)
            except ValueError:
                raise ValueError(f"throttle '{part}' is not reads=CAP/RATE or writes=CAP/RATE with CAP 1-1000000 "
                                 "and RATE 0.001-1000000") from None
            if key.strip() == "reads":
                limits.read_capacity, limits.read_rate = c, r
            elif key.strip() == "writes":
                limits.write_capacity, limits.write_rate = c, r
            else:
                raise ValueError(f"throttle key '{key}' is not reads or writes")
        return limits


class Throttle:
    def __init__(self, limits: ThrottleLimits, clock: SimClock | None = None) -> None:
        self.limits = limits
        self.clock = clock
        self._buckets: dict[tuple[str, bool], TokenBucket] = {}

    def bucket(self, subscription: str, write: bool) -> TokenBucket:
        key = (subscription.lower(), write)
        b = self._buckets.get(key)
        if b is None:
            lim = self.limits
            cap, rate = (lim.write_capacity, lim.write_rate) if write else (lim.read_capacity, lim.read_rate)
            b = TokenBucket(cap, rate, self.clock)
            self._buckets[key] = b
        return b
