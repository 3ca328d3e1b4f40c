"""The simulated world: no HTTP in here (moto's backends).

The world holds the clock, the stores of every resource type (groups, scale sets with their VMs, operations)
and each type's behaviour, one object per type in ``vmssctl.emulator.resources`` reaching the others through
the world. Everything that takes time is a timestamped step on an instance (or a timer on an operation, or the
next move of a built-in rolling upgrade), kept in one heap. ``advance(now)`` applies due steps in time order,
each at its own timestamp, so a lazily advanced world is identical to one ticked continuously, and the
availability record carries the exact simulated time of every change.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, fields
from typing import Any, NamedTuple

from vmssctl.emulator import images, timing
from vmssctl.emulator.clock import SimClock
from vmssctl.emulator.faults import Faults
from vmssctl.emulator.network.appgateways import AppGateway, AppGateways
from vmssctl.emulator.network.loadbalancers import LoadBalancer, LoadBalancers
from vmssctl.emulator.network.traffic import Load, Traffic
from vmssctl.emulator.resources import availability
from vmssctl.emulator.resources.fields import SetKey
from vmssctl.emulator.resources.galleries import Galleries
from vmssctl.emulator.resources.groups import ResourceGroups
from vmssctl.emulator.resources.operations import Operation, Operations
from vmssctl.emulator.resources.quota import Quotas
from vmssctl.emulator.resources.rolling import RollingUpgrade, RollingUpgrades
from vmssctl.emulator.resources.scalesets import ScaleSet, ScaleSets
from vmssctl.emulator.resources.vms import Instance, Vms

DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-00000000feed"
DEFAULT_TENANT = "00000000-0000-0000-0000-0000000a11ce"


class Sets(dict[SetKey, ScaleSet]):
    """The scale sets by key, and each resource group's and each subscription's keys, in the order the sets
    came: what a write to a group may have changed, a group's or a subscription's sets and a subscription's
    quota usage are found without looking at every set (each would otherwise grow with the fleet)."""

    def __init__(self) -> None:
        super().__init__()
        self._groups: dict[str, dict[SetKey, None]] = {}
        self._subscriptions: dict[str, dict[SetKey, None]] = {}  # ("": a set of the world's default subscription)

    def __setitem__(self, key: SetKey, value: ScaleSet) -> None:
        super().__setitem__(key, value)
        self._groups.setdefault(key[0], {})[key] = None
        self._subscriptions.setdefault((value.subscription or "").lower(), {})[key] = None

    def __delitem__(self, key: SetKey) -> None:
        value = self[key]
        super().__delitem__(key)
        self._groups.get(key[0], {}).pop(key, None)
        self._subscriptions.get((value.subscription or "").lower(), {}).pop(key, None)

    def of_group(self, rg: str) -> Iterable[SetKey]:
        return self._groups.get(rg.lower(), {}).keys()

    def of_subscription(self, subscription: str, default: str) -> list[ScaleSet]:
        """The sets of a subscription (``default``: the world's, which a set without one is in)."""
        sub = subscription.lower()
        keys = [*self._subscriptions.get(sub, ()), *(self._subscriptions.get("", ()) if sub == default.lower() else ())]
        return [self[k] for k in keys]


class Looked(NamedTuple):
    """What a save looks at (``World.parts``): the parts that may have changed, {key: JSON-able}; the sets looked
    at whole (None: every set, and every group and operation); the resource groups written to (a set or group
    gone from one is deleted); the sets looked at in part (their row and these VMs: one gone is deleted); the
    operations looked at (one gone is deleted)."""

    parts: dict[str, object]
    sets: set[SetKey] | None
    groups: set[str]
    partial: dict[SetKey, set[int]]
    ops: set[str] | None


class World:
    def __init__(self, clock: SimClock, faults: Faults | None = None, seed: int = 0,
                 subscription: str = DEFAULT_SUBSCRIPTION, tenant: str = DEFAULT_TENANT,
                 subscriptions: list[str] | None = None) -> None:
        self.clock = clock
        # every subscription it serves, the first the default; resource group names are unique across them
        self.subscriptions = [subscription, *[x for x in (subscriptions or []) if x.lower() != subscription.lower()]]
        self.faults = faults or Faults()
        self.rng = random.Random(seed)
        self.subscription = subscription
        self.tenant = tenant
        # the stores
        self.groups: dict[str, dict] = {}
        self.sets: Sets = Sets()
        self.ops: dict[str, Operation] = {}
        self.lbs: dict[SetKey, LoadBalancer] = {}
        self.appgws: dict[SetKey, AppGateway] = {}
        self.loads: dict[str, Load] = {}
        self.limits: dict[str, int] = {}  # vCPU quotas lowered by an admin call (resources/quota.py)
        self.gallery_versions: dict[str, dict] = {}  # gallery image versions, by id (resources/galleries.py)
        self.catalog = images.Catalog()
        # the resource types' behaviour
        self.resource_groups = ResourceGroups(self)
        self.scale_sets = ScaleSets(self)
        self.vms = Vms(self)
        self.operations = Operations(self)
        self.rolling_upgrades = RollingUpgrades(self)
        self.load_balancers = LoadBalancers(self)
        self.app_gateways = AppGateways(self)
        self.traffic = Traffic(self)
        self.quotas = Quotas(self)
        self.galleries = Galleries(self)
        self._heap: list = []
        self._seq = 0
        # what each kind of timed work on the heap wakes: (key, time it is due)
        self._due: dict[str, Callable[[object, float], None]] = {
            "inst": self.vms.due, "op": self.operations.due, "ru": self.rolling_upgrades.due}
        self.changes = 0  # bumped on every state change; the server persists when it moves
        self.touched: set[SetKey] | None = set()  # sets that may have changed since the last save (None: any)
        self.touched_groups: set[str] = set()
        self.touched_ops: set[str] = set()  # operations created, changed or forgotten since the last save
        self.touched_vms: dict[SetKey, set[int]] = {}  # VMs whose own timed steps ran (their set's row too)

    # ----------------------------------------------------------------- time
    def wake(self, t: float, kind: str, key: object) -> None:
        """Have ``kind``'s owner look at ``key`` at simulated time ``t``."""
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, key))

    def now(self) -> float:
        return self.clock.now()

    def advance(self, now: float | None = None) -> float:
        """Apply every step due by ``now``, each at its own simulated time."""
        now = self.clock.now() if now is None else now
        heap = self._heap
        traffic = self.traffic
        touched = self.touched
        while heap and heap[0][0] <= now:
            t, _, kind, key = heapq.heappop(heap)
            traffic.until(t)  # requests see the world as it was until this moment
            self._due[kind](key, t)
            if touched is None:  # (what the step may have changed, for the next save)
                continue
            if kind == "inst":  # a VM's step changes that VM, and its set's row (counts, availability, its op)
                self.touched_vms.setdefault(key[0], set()).add(key[1])
                continue
            target: Any = key if kind == "ru" else \
                (tuple(op.set_key) if (op := self.ops.get(str(key))) and op.set_key else None)
            if target is not None:
                touched.add(target)
        traffic.until(now)
        return now

    def jitter(self, base: float, factor: float = 1.0) -> float:
        """A duration as long as ``base`` times ``factor``, give or take the emulator's jitter."""
        return base * factor * self.rng.uniform(1 - timing.JITTER, 1 + timing.JITTER)

    # ------------------------------------------------------------ persistence
    SCHEMA = 1  # of the state file; bump when dump() changes shape

    # Saved part by part (persistence.SqliteStore): a part is a row, written when its bytes change. Which parts
    # may have changed since the last save is known without looking at the others, so a save costs what changed,
    # not the size of the world: a set whose instances had timed work applied (advance: the VMs whose steps ran,
    # or the whole set for an operation's or a rolling upgrade's), a set an ARM write named (its resource group:
    # ``touch``; of a set looked at whole, the VMs whose etag moved since a save was given them: ``_set_parts``),
    # a resource group written to (its own row), an operation created, changed or forgotten
    # (``touched_ops``: where an operation's VMs end, it finishes or times out), of a set's availability record the
    # rows new records went to (``_set_parts``); the rest (clock, catalog, load balancers, gateways, loads) is small
    # and compared whole. ``touch(None)`` makes every part a candidate (a write whose scope is wider). The tests'
    # emulators check every save against the whole state (VMSSCTL_EMULATOR_CHECK_SAVES).
    def touch(self, rg: str | None) -> None:
        if self.touched is None:
            return
        if rg is None:
            self.touched = None
        else:
            self.touched.update(self.sets.of_group(rg))
            self.touched_groups.add(rg.lower())

    def parts(self) -> Looked:
        """The parts that may differ from what was saved, and what was looked at to find them (a part looked at
        and not found is gone); then forget what was touched."""
        out: dict[str, object] = {
            "meta": {"schema": self.SCHEMA, "subscription": self.subscription, "tenant": self.tenant,
                     "subscriptions": self.subscriptions, "catalog": self.catalog.dump(),
                     "faults": self.faults.to_json(), "limits": self.limits, "galleryVersions": self.gallery_versions},
            "clock": {"now": self.now(), "rng": list(self.rng.getstate()[1]), "rngPos": self.rng.getstate()[2]},
        }
        looked = None if self.touched is None else set(self.touched)
        ops = None if looked is None else set(self.touched_ops)
        for op_id in (self.ops if ops is None else ops):
            op = self.ops.get(op_id)
            if op is not None:
                out[f"op:{op_id}"] = dict(vars(op))
        groups = set(self.touched_groups)
        for g in (self.groups if looked is None else groups):  # (a group is written to when its own row changes)
            if g in self.groups:
                out[f"grp:{g}"] = self.groups[g]
        every = looked is None
        for k in (self.sets if looked is None else looked):
            ss = self.sets.get(k)
            if ss is not None:
                out.update(_set_parts(ss, every=every))
        partial = {} if looked is None else {k: v for k, v in self.touched_vms.items() if k not in looked}
        for k, ids in partial.items():
            ss = self.sets.get(k)
            if ss is not None:
                out.update(_set_parts(ss, ids, every=every))
        stores: tuple[tuple[str, dict[Any, Any]], ...] = (("lb", self.lbs), ("gw", self.appgws), ("load", self.loads))
        for prefix, store in stores:
            for k, v in store.items():
                out[f"{prefix}:{_key_text(k)}"] = dict(vars(v))
        self.touched, self.touched_groups, self.touched_ops, self.touched_vms = set(), set(), set(), {}
        return Looked(out, looked, groups, partial, ops)

    def saved_set(self, set_key: str) -> ScaleSet | None:
        """The set a saved row names ("rg/name"), if it is still there."""
        rg, _, name = set_key.partition("/")
        return self.sets.get((rg, name))

    def record_rows(self, set_key: str) -> range:
        """The numbers of the rows a set's availability record is saved in now (none: the set is gone)."""
        ss = self.saved_set(set_key)
        return record_rows(ss) if ss is not None else range(0)

    def all_parts(self) -> dict[str, object]:
        """Every part (a first save, and the check that what was saved is the whole state)."""
        touched, groups, ops, vms = self.touched, self.touched_groups, self.touched_ops, self.touched_vms
        self.touched = None
        try:
            out = self.parts().parts
        finally:
            self.touched, self.touched_groups, self.touched_ops, self.touched_vms = touched, groups, ops, vms
        return out

    @staticmethod
    def from_parts(parts: dict[str, Any]) -> dict:
        """The state ``dump`` gives, put together from saved parts (what ``load`` takes)."""
        state = {**parts["meta"], **parts["clock"], "ops": [], "sets": [], "loadBalancers": [],
                 "applicationGateways": [], "loads": []}
        state["groups"] = dict(parts["meta"].get("groups") or {})  # (saved in the meta row before they had rows)
        sets: dict[str, dict] = {}
        instances: dict[str, list] = {}
        records: dict[str, list[tuple[int, list]]] = {}
        for key, value in sorted(parts.items()):
            kind, _, rest = key.partition(":")
            if kind == "op":
                state["ops"].append(value)
            elif kind == "set":
                sets[rest] = value
            elif kind == "inst":
                instances.setdefault(rest.rsplit(":", 1)[0], []).append(value)
            elif kind == "grp":
                state["groups"][rest] = value
            elif kind == "avl":
                set_key, _, n = rest.rpartition(":")
                records.setdefault(set_key, []).append((int(n), value))
            elif kind in ("lb", "gw", "load"):
                state[{"lb": "loadBalancers", "gw": "applicationGateways", "load": "loads"}[kind]].append(value)
        for k in sorted(sets):
            sets[k]["instances"] = sorted(instances.get(k, []), key=lambda i: i["instance_id"])
            if k in records:  # (a set row saved before the record had rows of its own holds it)
                sets[k]["availability"] = [r for _, rows in sorted(records[k]) for r in rows]
            state["sets"].append(sets[k])
        state["ops"].sort(key=lambda o: (o["start"], o["id"]))  # (rows come back in key order: one order for all)
        return state

    def dump(self) -> dict:
        """The whole state (``/_emulator/state``), in the order a restart reads it back."""
        return self.from_parts(self.all_parts())

    @classmethod
    def load(cls, state: dict, clock: SimClock, faults: Faults | None = None) -> World:
        world = cls(clock, faults, subscription=state["subscription"], tenant=state["tenant"],
                    subscriptions=state.get("subscriptions"))
        world.rng.setstate((3, tuple(state["rng"]), state["rngPos"]))
        world.groups = state["groups"]
        world.catalog = images.Catalog(state["catalog"])
        for o in state["ops"]:
            op = Operation(**o)
            world.ops[op.id] = op
            if op.status == "InProgress" and op.end_at is not None:
                world.wake(op.end_at, "op", op.id)
        for s in state["sets"]:
            insts, rolling = s.pop("instances"), s.pop("rolling")
            ss = ScaleSet(**s)
            ss.rolling = RollingUpgrade(**rolling) if rolling else None
            for d in insts:
                inst = Instance(**d)
                ss.instances[inst.instance_id] = inst
                if inst.steps:
                    world.wake(inst.steps[0][0], "inst", (ss.key, inst.instance_id))
            if ss.rolling and ss.rolling.code == "RollingForward":
                world.wake(ss.rolling.next_at, "ru", ss.key)
            world.sets[ss.key] = ss
        for d in state.get("loadBalancers", []):  # (a state saved before there were any: none)
            lb = LoadBalancer(**d)
            world.lbs[lb.key] = lb
        for d in state.get("applicationGateways", []):  # (a state saved before there were any: none)
            gw = AppGateway(**d)
            world.appgws[gw.key] = gw
        for d in state.get("loads", []):
            load = Load(**d)
            world.loads[load.id] = load
        world.limits = dict(state.get("limits") or {})
        world.gallery_versions = dict(state.get("galleryVersions") or {})
        return world


def _key_text(key: object) -> str:
    return "/".join(key) if isinstance(key, tuple) else str(key)


def _set_parts(ss: ScaleSet, only: set[int] | None = None, every: bool = True) -> dict[str, object]:
    """A set's row (without its VMs and its availability record), a row per VM (``only``: per VM of these that
    still exist; else ``every`` VM, or those whose etag moved since a save was given them), and its record's rows
    (``every``: all of them, else those a save has not had all of). What a save is given is marked on the set."""
    k = _key_text(ss.key)
    out: dict[str, object] = {f"set:{k}": {
        **{f.name: getattr(ss, f.name) for f in fields(ss) if f.name not in ("instances", "rolling", "availability")},
        "rolling": asdict(ss.rolling) if ss.rolling else None}}
    vms: Iterable[Instance]
    if only is not None:
        vms = [ss.instances[i] for i in only if i in ss.instances]
    elif every:
        vms = ss.instances.values()
    else:  # the VMs changed since a save was given them: every change to a VM bumps its etag
        given = ss.__dict__.get("_vms_given", {})
        vms = [i for i in ss.instances.values()
               if (g := given.get(i.instance_id)) is None or g[0] is not i or g[1] != i.etag]
    for i in vms:
        out[f"inst:{k}:{i.instance_id}"] = dict(vars(i))
    if not every:  # (not a dataclass field either; a set loaded from disk starts with none: all its VMs once)
        given = ss.__dict__.setdefault("_vms_given", {})
        if len(given) > 2 * len(ss.instances) + 64:  # (VMs deleted since)
            given = ss.__dict__["_vms_given"] = {n: g for n, g in given.items() if n in ss.instances}
        given.update((i.instance_id, (i, i.etag)) for i in vms)
    first, records = ss.availability_from, ss.availability
    end = first + len(records)
    start = first if every else min(max(first, ss.__dict__.get("_records_given", 0)), end)
    for n in _row_numbers(start, end):
        lo = max(n * RECORDS_PER_ROW, first) - first
        out[f"avl:{k}:{n}"] = records[lo:(n + 1) * RECORDS_PER_ROW - first]
    if not every:  # (not a dataclass field: never saved; a set loaded from disk starts at 0, all its rows)
        ss.__dict__["_records_given"] = end
    return out


# A set's availability record grows with every change of its counts (thousands in a rollout of a large set, up to
# availability.CAP): saved in rows of this many records by their index in the whole record, a save writes the
# row the new records went to, not the whole record (the set's row held it, written again at every save).
RECORDS_PER_ROW = 500
# (what passes the cap is dropped a tenth at a time, whole rows: a row is never left holding dropped records)
assert availability.CAP // 10 % RECORDS_PER_ROW == 0


def record_rows(ss: ScaleSet) -> range:
    """The numbers of a set's availability rows."""
    return _row_numbers(ss.availability_from, ss.availability_from + len(ss.availability))


def _row_numbers(start: int, end: int) -> range:
    """The numbers of the rows that hold records ``start`` to ``end - 1`` of a record (by index in the whole)."""
    return range(start // RECORDS_PER_ROW, (end - 1) // RECORDS_PER_ROW + 1) if end > start else range(0)


__all__ = ["DEFAULT_SUBSCRIPTION", "DEFAULT_TENANT", "Instance", "Operation", "RollingUpgrade", "ScaleSet", "World"]
