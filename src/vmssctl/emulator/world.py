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
from collections.abc import Callable
from dataclasses import asdict, fields

from vmssctl.emulator import images, timing
from vmssctl.emulator.clock import SimClock
from vmssctl.emulator.faults import Faults
from vmssctl.emulator.network.appgateways import AppGateway, AppGateways
from vmssctl.emulator.network.loadbalancers import LoadBalancer, LoadBalancers
from vmssctl.emulator.network.traffic import Load, Traffic
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
        self.sets: dict[SetKey, ScaleSet] = {}
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
        while heap and heap[0][0] <= now:
            t, _, kind, key = heapq.heappop(heap)
            traffic.until(t)  # requests see the world as it was until this moment
            self._due[kind](key, t)
        traffic.until(now)
        return now

    def jitter(self, base: float, factor: float = 1.0) -> float:
        """A duration as long as ``base`` times ``factor``, give or take the emulator's jitter."""
        return base * factor * self.rng.uniform(1 - timing.JITTER, 1 + timing.JITTER)

    # ------------------------------------------------------------ persistence
    SCHEMA = 1  # of the state file; bump when dump() changes shape

    def dump(self) -> dict:
        return {
            "schema": self.SCHEMA, "now": self.now(), "subscription": self.subscription, "tenant": self.tenant,
            "subscriptions": self.subscriptions,
            "rng": list(self.rng.getstate()[1]), "rngPos": self.rng.getstate()[2],
            "groups": self.groups, "catalog": self.catalog.dump(), "faults": self.faults.to_json(),
            # shallow copies: the caller serializes at once, and asdict's deep copies made a save of a
            # 1,000-VM world cost more than the request that caused it
            "ops": [dict(vars(o)) for o in self.ops.values()],
            "sets": [{**{f.name: getattr(s, f.name) for f in fields(s) if f.name not in ("instances", "rolling")},
                      "instances": [dict(vars(i)) for i in s.instances.values()],
                      "rolling": asdict(s.rolling) if s.rolling else None} for s in self.sets.values()],
            "loadBalancers": [dict(vars(lb)) for lb in self.lbs.values()],
            "applicationGateways": [dict(vars(gw)) for gw in self.appgws.values()],
            "loads": [dict(vars(load)) for load in self.loads.values()],
            "limits": self.limits, "galleryVersions": self.gallery_versions,
        }

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


__all__ = ["DEFAULT_SUBSCRIPTION", "DEFAULT_TENANT", "Instance", "Operation", "RollingUpgrade", "ScaleSet", "World"]
