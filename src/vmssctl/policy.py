"""A rollout policy: how to batch, how much may be down, what counts as failure.

It comes from flags, a TOML file (``--policy rollout.toml``, same names with
underscores), or both; flags win. Everything is validated before any request is made.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace

from vmssctl import inputs
from vmssctl.errors import UsageError

GROUPINGS = ("update-domain", "fault-domain", "zone", "batch")
STRATEGIES = ("in-place", "surge", "blue-green")
BLUE_GREEN = "blue-green"
DRAINS = ("auto", "none", "lb", "appgw", "hook")
DRAINED = ("in-place", "surge", BLUE_GREEN)  # the strategies that drain (Azure's own upgrade stops VMs itself)
AZURE_ROLLING = "azure-rolling"  # not chosen by the user: how a Rolling or Automatic set is upgraded (Azure's own)
SMALL_SET = 5  # below this many instances, one at a time unless told otherwise


@dataclass(frozen=True)
class Amount:
    """A count or a percentage of the scale set (``3`` or ``20%``)."""

    value: float
    percent: bool

    @classmethod
    def parse(cls, text: str | int, flag: str) -> Amount:
        if isinstance(text, str) and text.endswith("%"):
            return cls(inputs.percent(text, flag), True)
        try:
            return cls(inputs.count(text, flag), False)
        except UsageError:
            raise UsageError(f"{flag} '{inputs.shown(text)}' is not a count from 0 to {inputs.MAX_INSTANCES} "
                             "(3) or a percentage (20%)") from None

    def of(self, total: int) -> int:
        return math.floor(total * self.value / 100) if self.percent else int(self.value)

    @property
    def everything(self) -> bool:
        """Does this amount explicitly allow the whole set (``100%``)?"""
        return self.percent and self.value >= 100

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
    no_health_signal: bool = False  # go on although nothing but power and provisioning state can be checked
    gates: tuple[dict, ...] = ()  # [[gates]] entries: kind = probe | hook | prometheus | web, and their settings
    strategy: str = "in-place"  # in-place: upgrade batches where they stand; surge: add new VMs, then retire old
    max_surge: Amount | None = None  # surge: VMs added at a time (None: the batch size)
    surge_fallback: str = "none"  # surge refused by ARM (quota, SKU, allocation): stop, or go on in-place
    allow_automatic: bool = False  # an Automatic-policy set: let Azure upgrade every VM at once (an outage)
    windows: tuple[str, ...] = ()  # maintenance windows (UTC) in which a batch may start; () = any time
    drain: str = "auto"  # lb: before a batch is upgraded, its VMs' admin state goes Down in the load balancers;
    # auto: lb when the set is behind a load-balancing rule with a health probe (resolved by the plan)
    drain_timeout: float = 30.0  # how long drained VMs keep their established connections before the upgrade
    drain_hook: str | None = None  # hook: the command that takes VMs out of rotation (and puts them back)
    # blue-green: the new set's capacity (None: the old one's), how long the old set stays drained but ready to
    # take traffic back after the switch, and whether it is then deleted (else scaled to 0, its model kept)
    green_capacity: int | None = None
    bake: float = 600.0
    delete_blue: bool = False
    green_weight: Amount | None = None  # blue-green: admit only this many green VMs first, for --pause, then all
    wait_for_image: float = 0.0  # how long to wait for a gallery image version to replicate to the set's region

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
        if self.strategy not in (*STRATEGIES, AZURE_ROLLING) and not _registered(self.strategy):
            raise UsageError(f"--strategy '{self.strategy}' is not one of {', '.join(STRATEGIES)}")
        if self.max_surge is not None and self.strategy not in ("surge", AZURE_ROLLING):
            raise UsageError("--max-surge applies to --strategy surge")
        if self.max_surge is not None and self.max_surge.of(1000) == 0 and not self.max_surge.percent:
            raise UsageError("--max-surge must be at least 1")
        if self.surge_fallback not in ("none", "in-place"):
            raise UsageError(f"--surge-fallback '{self.surge_fallback}' is not none or in-place")
        if self.rollback not in ("auto", "manual"):
            raise UsageError(f"--rollback '{self.rollback}' is not auto or manual")
        if self.health_timeout < 1 or self.poll < 1:
            raise UsageError("--health-timeout and --poll must be at least 1s")
        if self.drain not in DRAINS:
            raise UsageError(f"--drain '{self.drain}' is not one of {', '.join(DRAINS)}")
        if self.drain in ("lb", "appgw", "hook") and self.strategy not in DRAINED:
            raise UsageError(f"--drain {self.drain} applies to --strategy in-place and surge, not {self.strategy} "
                             "(Azure's rolling upgrade stops VMs itself, without a drain)")
        if self.strategy == BLUE_GREEN and self.drain == "hook":
            raise UsageError("--drain hook does not apply to --strategy blue-green yet: it drains the old set by the "
                             "load balancers (--drain lb, or auto), the Application Gateways (appgw) or not at all "
                             "(--drain none)")
        blue_green_only = [flag for flag, given in (("--green-capacity", self.green_capacity is not None),
                                                    ("--bake", self.bake != 600.0), ("--delete-blue", self.delete_blue),
                                                    ("--green-weight", self.green_weight is not None)) if given]
        if blue_green_only and self.strategy != BLUE_GREEN:
            raise UsageError(f"{', '.join(blue_green_only)} applies to --strategy blue-green")
        if self.green_weight is not None and (self.green_weight.of(100) == 0 or self.drain in ("none", "appgw")):
            raise UsageError("--green-weight admits that many green VMs first by the load balancers' admin state: it "
                             "must be at least 1 (or 1%), and needs --drain lb (or auto on a set behind one)")
        if (self.drain == "hook") != (self.drain_hook is not None):
            raise UsageError("--drain hook needs --drain-hook CMD" if self.drain == "hook" else
                             "--drain-hook applies to --drain hook")
        if not 0 <= self.drain_timeout <= 3600:
            raise UsageError("--drain-timeout must be from 0s to 1h")
        if self.probe_url is not None and not re.match(r"^https?://", self.probe_url):
            raise UsageError(f"--probe-url '{self.probe_url}' is not an http(s) URL template")
        if self.instances:
            inputs.instance_ids(list(self.instances))
        if len(self.gates) > 20:
            raise UsageError("at most 20 gates")
        from vmssctl.rollout.gates import build

        build(self.all_gates())  # every gate's settings checked now, before anything is written

    def all_gates(self) -> tuple[dict, ...]:
        """The declared gates, with --probe-url and --hook as the probe and hook gates they are."""
        legacy = ([{"kind": "probe", "url": self.probe_url}] if self.probe_url else []) + \
            ([{"kind": "hook", "command": self.hook}] if self.hook else [])
        return (*legacy, *self.gates)

    def surge_count(self, capacity: int) -> int:
        """VMs a surge batch adds (and then retires): --max-surge, else the batch size; at least one."""
        if self.max_surge is not None:
            return max(1, self.max_surge.of(capacity))
        return self.batch_count(capacity)

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
        d["max_surge"] = str(self.max_surge) if self.max_surge else None
        d["green_weight"] = str(self.green_weight) if self.green_weight else None
        d["instances"] = list(self.instances)
        d["gates"] = [dict(g) for g in self.gates]
        d["windows"] = list(self.windows)
        return d

    @classmethod
    def from_json(cls, d: dict) -> RolloutPolicy:
        d = dict(d)
        d["max_unavailable"] = Amount.parse(d["max_unavailable"], "max_unavailable") if d.get("max_unavailable") \
            else None
        d["max_unhealthy_upgraded"] = Amount.parse(d.get("max_unhealthy_upgraded", "0"), "max_unhealthy_upgraded")
        d["instances"] = tuple(d.get("instances") or ())
        d["gates"] = tuple(d.get("gates") or ())
        d["windows"] = tuple(d.get("windows") or ())
        d["max_surge"] = Amount.parse(d["max_surge"], "max_surge") if d.get("max_surge") else None
        d["green_weight"] = Amount.parse(d["green_weight"], "green_weight") if d.get("green_weight") else None
        return cls(**d)


_NAMES = {f.name for f in fields(RolloutPolicy)}


def load(path: str | None, overrides: dict) -> RolloutPolicy:
    """Policy from an optional TOML file, with flag values (not None) on top; every value bounded."""
    raw: dict = {}
    if path is not None:
        try:
            raw = tomllib.loads(inputs.read_small_file(path, "--policy"))
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"policy file '{path}' is not valid TOML: {e}") from None
        except RecursionError:  # tables or arrays nested thousands deep
            raise UsageError(f"policy file '{path}' nests tables or arrays too deeply") from None
        section = raw.get("rollout", raw)
        if not isinstance(section, dict):
            raise UsageError(f"policy file '{path}': [rollout] must be a table")
        if section is not raw and "gates" in raw:
            section = {**section, "gates": raw["gates"]}  # [[gates]] beside [rollout]
        raw = section
        unknown = set(raw) - _NAMES
        if unknown:
            raise UsageError(f"policy file '{path}': unknown setting(s) {', '.join(sorted(unknown))}")
    merged = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    kwargs: dict = {}
    for key, value in merged.items():
        flag = f"--{key.replace('_', '-')}"
        if key in ("pause", "health_timeout", "poll", "drain_timeout", "bake", "wait_for_image"):
            kwargs[key] = inputs.duration(value, flag)
        elif key in ("max_unavailable", "max_unhealthy_upgraded", "max_surge", "green_weight"):
            kwargs[key] = Amount.parse(value, flag)
        elif key == "instances":
            kwargs[key] = inputs.instance_ids(value, flag)
        elif key in ("batch_size", "green_capacity"):
            kwargs[key] = inputs.count(value, flag, 1)
        elif key == "canary":
            kwargs[key] = inputs.count(value, flag, 0)
        elif key == "batch_percent":
            kwargs[key] = inputs.percent(value, flag, low_open=True)
        elif key in ("probe_url", "hook", "drain_hook"):
            kwargs[key] = inputs.text(value, flag)
        elif key in ("prioritize_unhealthy", "no_health_signal", "allow_automatic", "delete_blue"):
            if not isinstance(value, bool):
                raise UsageError(f"{key} must be true or false")
            kwargs[key] = value
        elif key == "windows":
            from vmssctl.rollout.windows import parse_all

            kwargs[key] = parse_all(value, "windows")
        elif key == "gates":
            if not isinstance(value, list | tuple) or not all(isinstance(g, dict) for g in value):
                raise UsageError("gates must be a list of tables ([[gates]] in the policy file)")
            kwargs[key] = tuple(dict(g) for g in value)
        elif key in ("by", "rollback", "strategy", "surge_fallback", "drain"):
            if not isinstance(value, str):
                raise UsageError(f"{key} must be a string")
            kwargs[key] = value
        else:  # pragma: no cover - _NAMES and this table list the same settings
            raise UsageError(f"unknown setting {key}")
    return replace(RolloutPolicy(), **kwargs) if kwargs else RolloutPolicy()


def _registered(name: str) -> bool:
    """A strategy registered beyond the built-in ones (``rollout.strategies.register``)?"""
    from vmssctl.rollout.strategies import REGISTERED

    return name in REGISTERED

