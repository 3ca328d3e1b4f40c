"""A fleet file: one image for many scale sets, rolled out in stages. Parsed and bounded here, once.

```toml
name = "golden-2026-11"
[target]                          # the image, as `vmssctl upgrade`'s flags (version, sku, image_id, ...)
version = "24.04.202611200"
[select]                          # which scale sets (all of the connection's subscription when absent)
subscriptions = ["<guid>", "<guid>"]
resource_groups = ["prod-*"]      # shell patterns, case-insensitive
names = ["web*"]
tags = { env = "prod" }
locations = ["eastus"]
[policy]                          # each set's rollout policy, as `vmssctl upgrade --policy` takes it
batch_percent = 20
[[stages]]                        # in order; a stage's sets run in parallel up to its concurrency
name = "canary"                   # unique in the file
sets = ["prod-a/web"]             # explicit "rg/name" (or "subscription/rg/name"), or
match = "prod-a/*"                # a pattern on "rg/name"; a stage with neither takes every set left
concurrency = 1
bake = "10m"                      # wait after the stage before the next one starts
approve = true                    # a person approves before it starts ('vmssctl fleet approve', the dashboard)
approve_after = true              # ... and after its bake, before the fleet goes on
[halt]
max_failed = 0                    # failed sets the fleet tolerates before it halts (count)
max_failed_percent = 0            # ... or share of the sets started so far
[budget]                          # ARM requests a second per subscription, shared by a process's rollouts
reads_per_second = 20             # (Compute refills 25 reads and 10 writes a second per subscription)
writes_per_second = 8
```
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass, field

from vmssctl import inputs
from vmssctl.errors import UsageError
from vmssctl.fleet import DEFAULT_MAX_SETS
from vmssctl.policy import RolloutPolicy, load
from vmssctl.target import ImageChange

MAX_STAGES = 20
MAX_SETS = 1000  # the most a halt rule can count
TARGET_KEYS = {"version": "version", "sku": "sku", "offer": "offer", "publisher": "publisher",
               "image_id": "image_id", "custom_uri": "custom_uri"}


@dataclass(frozen=True)
class SetRef:
    """A scale set of the subscription, as the fleet selects it."""

    resource_group: str
    name: str
    location: str = ""
    tags: dict = field(default_factory=dict, hash=False, compare=False)
    subscription: str = ""  # "" = the connection's

    @property
    def key(self) -> str:
        """The set's identity in a fleet (its plan, events, journal and the dashboard): subscription/rg/name."""
        return f"{self.subscription}/{self.resource_group}/{self.name}"

    @property
    def short(self) -> str:
        """rg/name: what a fleet file names and patterns match."""
        return f"{self.resource_group}/{self.name}"


@dataclass(frozen=True)
class Stage:
    name: str
    sets: tuple[str, ...] = ()  # explicit "rg/name"
    match: str | None = None  # a pattern on "rg/name"
    concurrency: int = 1
    bake: float = 0.0
    approve: bool = False  # a person approves before the stage starts
    approve_after: bool = False  # ... and after its bake, before the fleet goes on

    def takes(self, ref: SetRef) -> bool:
        if self.sets:
            return any(_names(s, ref) for s in self.sets)
        if self.match:
            return fnmatch.fnmatchcase(ref.short.lower(), self.match.lower())
        return True


def _names(entry: str, ref: SetRef) -> bool:
    """Does a stage's "rg/name" (or "subscription/rg/name") entry name this set?"""
    return entry.lower() in (ref.short.lower(), ref.key.lower())


@dataclass(frozen=True)
class FleetSpec:
    name: str
    target: ImageChange
    stages: tuple[Stage, ...]
    policy: RolloutPolicy
    resource_groups: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    tags: dict = field(default_factory=dict, hash=False, compare=False)
    locations: tuple[str, ...] = ()
    subscriptions: tuple[str, ...] = ()  # () = the connection's subscription
    max_failed: int = 0
    max_failed_percent: float | None = None
    reads_per_second: float = 20.0  # the ARM request budget of each subscription, in each process running sets
    writes_per_second: float = 8.0
    raw: str = field(default="", compare=False, repr=False)  # the file's text: what the fleet records and resumes

    def selects(self, ref: SetRef) -> bool:
        def any_match(patterns: tuple[str, ...], value: str) -> bool:
            return not patterns or any(fnmatch.fnmatchcase(value.lower(), p.lower()) for p in patterns)
        return (any_match(self.resource_groups, ref.resource_group) and any_match(self.names, ref.name)
                and (not self.locations or ref.location.lower() in {x.lower() for x in self.locations})
                and all(str(ref.tags.get(k)) == str(v) for k, v in self.tags.items()))

    def halts(self, failed: int, started: int) -> bool:
        """Do ``failed`` of ``started`` sets exceed what the fleet tolerates?"""
        if self.max_failed_percent is not None:
            return started > 0 and failed * 100 > self.max_failed_percent * started
        return failed > self.max_failed


def _strings(value: object, what: str, high: int = 50) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or len(items) > high or not all(isinstance(i, str) and i for i in items):
        raise UsageError(f"{what} must be a string or a list of at most {high} strings")
    return tuple(inputs.text(i, what, 200) for i in items)


def parse(text: str, where: str = "fleet file") -> FleetSpec:
    """A fleet file's TOML as a FleetSpec; every value bounded, every mistake one line naming the setting."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{where} is not valid TOML: {e}") from None
    except RecursionError:  # tables or arrays nested thousands deep
        raise UsageError(f"{where} nests tables or arrays too deeply") from None
    unknown = set(raw) - {"name", "target", "select", "policy", "stages", "halt", "budget"}
    if unknown:
        raise UsageError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    target_raw = raw.get("target")
    if not isinstance(target_raw, dict) or not target_raw:
        raise UsageError(f"{where}: [target] is required (version, sku, offer, publisher, image_id or custom_uri)")
    if set(target_raw) - set(TARGET_KEYS):
        raise UsageError(f"{where}: [target] takes only {', '.join(TARGET_KEYS)}")
    target = ImageChange(**{TARGET_KEYS[k]: inputs.text(v, f"target.{k}", 1000) for k, v in target_raw.items()})
    target.validate()
    select = raw.get("select") or {}
    if not isinstance(select, dict) or set(select) - {"resource_groups", "names", "tags", "locations",
                                                      "subscriptions"}:
        raise UsageError(f"{where}: [select] takes subscriptions, resource_groups, names, tags and locations")
    tags = select.get("tags") or {}
    if not isinstance(tags, dict) or len(tags) > 50 or not all(isinstance(v, str | int | bool) for v in tags.values()):
        raise UsageError(f"{where}: select.tags must be a table of at most 50 name = value pairs")
    policy_raw = raw.get("policy") or {}
    if not isinstance(policy_raw, dict):
        raise UsageError(f"{where}: [policy] must be a table")
    policy = _policy(policy_raw)
    stages_raw = raw.get("stages") or [{"name": "all"}]
    if not isinstance(stages_raw, list) or not stages_raw or len(stages_raw) > MAX_STAGES:
        raise UsageError(f"{where}: [[stages]] must be 1 to {MAX_STAGES} tables")
    stages = tuple(_stage(s, n) for n, s in enumerate(stages_raw, 1))
    names = [s.name.lower() for s in stages]
    twice = next((s.name for s in stages if names.count(s.name.lower()) > 1), None)
    if twice is not None:
        raise UsageError(f"{where}: two stages are named '{twice}': each stage needs a name of its own")
    halt = raw.get("halt") or {}
    if not isinstance(halt, dict) or set(halt) - {"max_failed", "max_failed_percent"}:
        raise UsageError(f"{where}: [halt] takes max_failed or max_failed_percent")
    if "max_failed" in halt and "max_failed_percent" in halt:
        raise UsageError(f"{where}: [halt] takes max_failed or max_failed_percent, not both")
    budget = raw.get("budget") or {}
    if not isinstance(budget, dict) or set(budget) - {"reads_per_second", "writes_per_second"}:
        raise UsageError(f"{where}: [budget] takes reads_per_second and writes_per_second")
    name = inputs.label(raw.get("name", "fleet"), "name", 100)
    return FleetSpec(
        name=name, target=target, stages=stages, policy=policy,
        resource_groups=_strings(select.get("resource_groups", []), "select.resource_groups"),
        names=_strings(select.get("names", []), "select.names"), tags={str(k): v for k, v in tags.items()},
        locations=_strings(select.get("locations", []), "select.locations"),
        subscriptions=tuple(inputs.subscription(x, "select.subscriptions")
                            for x in _strings(select.get("subscriptions", []), "select.subscriptions")),
        max_failed=inputs.count(halt.get("max_failed", 0), "halt.max_failed", 0, MAX_SETS),
        max_failed_percent=inputs.percent(halt["max_failed_percent"], "halt.max_failed_percent")
        if "max_failed_percent" in halt else None,
        reads_per_second=inputs.number(budget.get("reads_per_second", 20), "budget.reads_per_second", 0.1, 1000),
        writes_per_second=inputs.number(budget.get("writes_per_second", 8), "budget.writes_per_second", 0.1, 1000),
        raw=text)


def _policy(raw: dict) -> RolloutPolicy:
    """The per-set policy: the same settings, and the same bounds, as a `vmssctl upgrade` policy file."""
    return load(None, raw) if raw else RolloutPolicy()


STAGE_KEYS = ("name", "sets", "match", "concurrency", "bake", "approve", "approve_after")


def _stage(raw: object, n: int) -> Stage:
    if not isinstance(raw, dict) or set(raw) - set(STAGE_KEYS):
        raise UsageError(f"stage {n}: takes {', '.join(STAGE_KEYS)}")
    if "sets" in raw and "match" in raw:
        raise UsageError(f"stage {n}: use sets or match, not both")
    sets = _strings(raw.get("sets", []), f"stage {n} sets", MAX_SETS)
    for s in sets:
        parts = s.split("/")
        if len(parts) not in (2, 3) or not all(parts) or (len(parts) == 3 and not _is_guid(parts[0])):
            raise UsageError(f"stage {n}: '{inputs.shown(s)}' is not 'resource-group/scale-set' (or "
                             "'subscription-id/resource-group/scale-set')")
    for flag in ("approve", "approve_after"):
        if flag in raw and not isinstance(raw[flag], bool):
            raise UsageError(f"stage {n}: {flag} is true or false")
    return Stage(name=inputs.label(raw.get("name", f"stage {n}"), f"stage {n} name", 100), sets=sets,
                 match=inputs.text(raw["match"], f"stage {n} match", 200) if "match" in raw else None,
                 concurrency=inputs.count(raw.get("concurrency", 1), f"stage {n} concurrency", 1, 100),
                 bake=inputs.duration(raw.get("bake", 0), f"stage {n} bake"),
                 approve=bool(raw.get("approve", False)), approve_after=bool(raw.get("approve_after", False)))


def _is_guid(text: str) -> bool:
    try:
        inputs.subscription(text)
    except UsageError:
        return False
    return True


@dataclass(frozen=True)
class StagePlan:
    stage: Stage
    sets: tuple[SetRef, ...]


def assign(spec: FleetSpec, refs: list[SetRef], max_sets: int = DEFAULT_MAX_SETS) -> list[StagePlan]:
    """Which selected sets go in which stage: each in the first stage that takes it; refuses a set named in a
    stage that the subscriptions do not have (or the selection leaves out), a name that means sets in two
    subscriptions, more sets than ``max_sets``, and an empty fleet."""
    chosen = [r for r in refs if spec.selects(r)]
    if len(chosen) > max_sets:
        raise UsageError(f"the fleet selects {len(chosen)} scale sets, more than {max_sets}: narrow [select], or "
                         f"pass --max-sets {len(chosen)} to run them all")
    for stage in spec.stages:
        for entry in stage.sets:
            named = [r for r in chosen if _names(entry, r)]
            if not named:
                raise UsageError(f"stage '{stage.name}' names {entry}, not among the selected scale sets")
            if len(named) > 1:
                raise UsageError(f"stage '{stage.name}' names {entry}, which is a scale set in {len(named)} of the "
                                 "fleet's subscriptions: write it as 'subscription-id/resource-group/scale-set'")
    left = list(chosen)
    out = []
    for stage in spec.stages:
        here = [r for r in left if stage.takes(r)]
        left = [r for r in left if r not in here]
        out.append(StagePlan(stage, tuple(here)))
    if not any(p.sets for p in out):
        raise UsageError("the fleet selects no scale set: check [select] and the stages")
    if left:
        raise UsageError(f"{len(left)} selected scale set(s) are in no stage (e.g. {left[0].key}): add a last stage "
                         "without sets or match to take the rest")
    return out
