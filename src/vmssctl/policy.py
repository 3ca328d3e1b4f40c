"""A rollout policy: how to batch, how much may be down, what counts as failure.

It comes from flags, a TOML file (``--policy rollout.toml``, same names with
underscores), or both; flags win. Everything is validated before any request is made.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from vmssctl.azure import UsageError

GROUPINGS = ("update-domain", "fault-domain", "zone", "batch")
_DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")
SMALL_SET = 5  # below this many instances, one at a time unless told otherwise


def parse_duration(text: str | float | int, flag: str) -> float:
    """``90``, ``90s``, ``2m``, ``1h30m``, ``PT2M`` → seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise UsageError(f"{flag} must not be negative")
        return float(text)
    s = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    if s.startswith("pt"):
        s = s[2:]
    m = _DURATION_RE.match(s)
    if not s or not m:
        raise UsageError(f"{flag} '{text}' is not a duration such as 30s, 2m or 1h30m")
    h, mi, sec = m.groups()
    return int(h or 0) * 3600 + int(mi or 0) * 60 + float(sec or 0)


@dataclass(frozen=True)
class Amount:
    """A count or a percentage of the scale set (``3`` or ``20%``)."""

    value: float
    percent: bool

    @classmethod
    def parse(cls, text: str | int, flag: str) -> Amount:
        s = str(text).strip()
        try:
            if s.endswith("%"):
                v = float(s[:-1])
                if not 0 <= v <= 100:
                    raise ValueError
                return cls(v, True)
            v = int(s)
            if v < 0:
                raise ValueError
            return cls(v, False)
        except ValueError:
            raise UsageError(f"{flag} '{text}' is not a count (3) or a percentage (20%)") from None

    def of(self, total: int) -> int:
        return math.floor(total * self.value / 100) if self.percent else int(self.value)

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else str(int(self.value))


@dataclass(frozen=True)
class RolloutPolicy:
    by: str = "batch"
    batch_size: int | None = None
    batch_percent: float | None = None
    instances: tuple[str, ...] = ()
    canary: int = 0
    pause: float = 0.0
    max_unavailable: Amount | None = None  # None: the batch size
    max_unhealthy_upgraded: Amount = field(default_factory=lambda: Amount(0, False))
    health_timeout: float = 600.0
    rollback: str = "manual"
    prioritize_unhealthy: bool = False
    probe_url: str | None = None
    hook: str | None = None
    poll: float = 10.0

    def __post_init__(self) -> None:
        if self.by not in GROUPINGS:
            raise UsageError(f"--by '{self.by}' is not one of {', '.join(GROUPINGS)}")
        if self.batch_size is not None and self.batch_percent is not None:
            raise UsageError("use either --batch-size or --batch-percent, not both")
        if (self.batch_size is not None or self.batch_percent is not None) and self.by != "batch":
            raise UsageError(f"--batch-size/--batch-percent apply to --by batch, not --by {self.by}")
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if self.batch_percent is not None and not 0 < self.batch_percent <= 100:
            raise UsageError("--batch-percent must be more than 0 and at most 100")
        if self.canary < 0:
            raise UsageError("--canary must not be negative")
        if self.rollback not in ("auto", "manual"):
            raise UsageError(f"--rollback '{self.rollback}' is not auto or manual")
        if self.health_timeout <= 0 or self.poll <= 0:
            raise UsageError("--health-timeout and --poll must be positive")
        if self.probe_url is not None and not re.match(r"^https?://", self.probe_url):
            raise UsageError(f"--probe-url '{self.probe_url}' is not an http(s) URL template")
        for i in self.instances:
            if not i.isdigit():
                raise UsageError(f"--instances: '{i}' is not an instance id (use e.g. 3,7,9)")

    def batch_count(self, capacity: int) -> int:
        """Instances per batch for ``--by batch``."""
        if self.batch_size is not None:
            return self.batch_size
        if self.batch_percent is not None:
            return max(1, math.floor(capacity * self.batch_percent / 100))
        return 1 if capacity < SMALL_SET else max(1, capacity // 5)

    def to_json(self) -> dict:
        d = asdict(self)
        d["max_unavailable"] = str(self.max_unavailable) if self.max_unavailable else None
        d["max_unhealthy_upgraded"] = str(self.max_unhealthy_upgraded)
        d["instances"] = list(self.instances)
        return d

    @classmethod
    def from_json(cls, d: dict) -> RolloutPolicy:
        d = dict(d)
        d["max_unavailable"] = Amount.parse(d["max_unavailable"], "max_unavailable") if d.get("max_unavailable") \
            else None
        d["max_unhealthy_upgraded"] = Amount.parse(d.get("max_unhealthy_upgraded", "0"), "max_unhealthy_upgraded")
        d["instances"] = tuple(d.get("instances") or ())
        return cls(**d)


_NAMES = {f.name for f in fields(RolloutPolicy)}


def load(path: str | None, overrides: dict) -> RolloutPolicy:
    """Policy from an optional TOML file, with flag values (not None) on top."""
    raw: dict = {}
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise UsageError(f"policy file '{path}' does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise UsageError(f"policy file '{path}' is not valid TOML: {e}") from None
        raw = raw.get("rollout", raw)
        unknown = set(raw) - _NAMES
        if unknown:
            raise UsageError(f"policy file '{path}': unknown setting(s) {', '.join(sorted(unknown))}")
    merged = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        kwargs: dict = {}
        for key, value in merged.items():
            if key in ("pause", "health_timeout", "poll"):
                kwargs[key] = parse_duration(value, f"--{key.replace('_', '-')}")
            elif key in ("max_unavailable", "max_unhealthy_upgraded"):
                kwargs[key] = Amount.parse(value, f"--{key.replace('_', '-')}")
            elif key == "instances":
                items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
                kwargs[key] = tuple(i.strip() for i in items if i.strip())
            elif key in ("batch_size", "canary"):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise UsageError(f"{key} must be a whole number")
                kwargs[key] = value
            elif key == "batch_percent":
                kwargs[key] = float(str(value).rstrip("%"))
            else:
                kwargs[key] = value
        return replace(RolloutPolicy(), **kwargs) if kwargs else RolloutPolicy()
    except (TypeError, ValueError) as e:
        raise UsageError(f"invalid rollout policy: {e}") from None
