"""Client load on a load balancer's rule or an Application Gateway's routing rule, simulated on the emulator's
clock: what users would count.

A fluid model, not an event per request (1,000 requests a second at 600x stays cheap): each tick (a simulated
second, and every moment the world changes) the rule's new requests go evenly to the backends it deems eligible
(the front's ``route``: on a load balancer admin state Up, or not Down and the probe says Up; on a gateway the
probe says Healthy). A request fails when

- ``probe-lag``: it is sent to a VM that stopped serving but is not yet probed down;
- ``no-backend``: no backend is eligible;
- ``cut``: its VM stops serving while the request is in flight, or leaves the pool with it (deleted, or out of a
  gateway's pool: with connection draining the requests in flight have ``drainTimeoutInSec`` to finish, and the
  ones left then are cut). A VM's in-flight requests are its arrival rate times their mean duration (and, for the
  long-lived share, their lifetime), decaying exponentially from the moment it stopped getting new ones (admin
  state Down, probed down, out of the pool): a drained VM is cut with what is left.

Every count is exact arithmetic on the seeded world: the same run gives the same figures.
"""

from __future__ import annotations

import itertools
import math
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vmssctl.emulator.errors import ArmError, invalid
from vmssctl.emulator.network.members import member_name
from vmssctl.emulator.resources import availability

if TYPE_CHECKING:
    from vmssctl.emulator.network.members import Route
    from vmssctl.emulator.network.resource import Parent
    from vmssctl.emulator.world import World

TICK = 1.0  # simulated seconds between looks when nothing changes in the world
HISTORY_STEP, HISTORY_SIZE = 30.0, 1440  # the counts every 30 simulated seconds, the last 12 hours of them
CAUSES = ("probe-lag", "no-backend", "cut")


@dataclass
class Load:
    id: str
    rg: str
    lb: str  # the load balancer ("" for a gateway's load)
    rule: str  # its load-balancing rule, or the gateway's request routing rule
    rps: float  # new requests a second
    mean_duration: float  # seconds a short request is in flight
    long_share: float  # share of requests that are long-lived connections
    long_lifetime: float  # seconds a long-lived connection lasts
    start: float
    end: float | None  # None: until stopped
    last: float  # integrated up to here
    served: float = 0.0
    failed: dict[str, float] = field(default_factory=dict)  # by cause
    per_vm: dict[str, list[float]] = field(default_factory=dict)  # backend name -> [served, failed]
    routed: dict[str, list[float]] = field(default_factory=dict)  # name -> [rate, routed until, routed since]
    serving: dict[str, bool] = field(default_factory=dict)  # name -> serving at ``last``
    history: list[list[float]] = field(default_factory=list)  # [time, requests, failed] every HISTORY_STEP
    gateway: str = ""  # the Application Gateway ("" for a load balancer's load)
    leaving: dict[str, float] = field(default_factory=dict)  # name -> until when a VM out of the pool drains

    def totals(self) -> tuple[float, float]:
        failed = sum(self.failed.values())
        return self.served + failed, failed

    def sample(self) -> None:
        """Keep the counts at ``last`` when a step has passed since the last sample (what ``window`` reads)."""
        if not self.history or self.last - self.history[-1][0] >= HISTORY_STEP:
            self.history.append([self.last, *self.totals()])
            del self.history[:-HISTORY_SIZE]

    def window(self, since: float) -> dict:
        """Requests and failures from ``since`` to ``last`` (counts at ``since`` interpolated between samples;
        before the oldest sample kept: from it, and ``since`` says so)."""
        points = [*self.history, [self.last, *self.totals()]]
        since = min(max(since, points[0][0]), self.last)
        at = points[0]
        for a, b in itertools.pairwise(points):
            if a[0] <= since <= b[0]:
                f = (since - a[0]) / (b[0] - a[0]) if b[0] > a[0] else 1.0
                at = [since, a[1] + f * (b[1] - a[1]), a[2] + f * (b[2] - a[2])]
                break
        requests, failed = points[-1][1] - at[1], points[-1][2] - at[2]
        return {"since": since, "upTo": self.last, "requests": round(requests), "failed": round(failed),
                "failureRatio": failed / requests if requests > 0 else 0.0}

    def report(self) -> dict:
        failed = sum(self.failed.values())
        total = self.served + failed
        front = {"applicationGateway": self.gateway} if self.gateway else {"loadBalancer": self.lb}
        return {"id": self.id, **front, "resourceGroup": self.rg, "rule": self.rule, "rps": self.rps,
                "start": self.start, "end": self.end, "upTo": self.last, "requests": round(total),
                "served": round(self.served), "failed": round(failed),
                "failedBy": {c: round(self.failed.get(c, 0.0)) for c in CAUSES},
                "failureRatio": failed / total if total else 0.0,
                "backends": {k: {"served": round(v[0]), "failed": round(v[1])} for k, v in sorted(self.per_vm.items())}}


class Traffic:
    """The loads running on the world's load balancers (``world.loads``)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def start(self, body: dict) -> Load:
        """A new load (the admin API's body): resourceGroup, loadBalancer or applicationGateway, rule, rps, and
        optionally meanDurationSeconds, longLivedShare, longLivedSeconds, durationSeconds."""
        w = self.world
        rg, rule = str(body.get("resourceGroup", "")), str(body.get("rule"))
        if ("loadBalancer" in body) == ("applicationGateway" in body):
            raise invalid("Name either a loadBalancer or an applicationGateway.", "loadBalancer")
        gateway = "applicationGateway" in body
        front: Parent = w.app_gateways.get(rg, str(body["applicationGateway"])) if gateway else \
            w.load_balancers.get(rg, str(body["loadBalancer"]))
        front.child("requestRoutingRules" if gateway else "loadBalancingRules", rule)
        rps = _bounded(body, "rps", 0.001, 100_000, None)
        duration = _bounded(body, "durationSeconds", 1, 10 ** 8, None) if "durationSeconds" in body else 0.0
        now = w.advance()
        load = Load(id=str(uuid.UUID(int=w.rng.getrandbits(128))), rg=front.rg, lb="" if gateway else front.name,
                    gateway=front.name if gateway else "", rule=rule, rps=rps,
                    mean_duration=_bounded(body, "meanDurationSeconds", 0.001, 3600, 0.2),
                    long_share=_bounded(body, "longLivedShare", 0, 1, 0),
                    long_lifetime=_bounded(body, "longLivedSeconds", 1, 86_400, 300),
                    start=now, end=now + duration if duration else None, last=now)
        w.loads[load.id] = load
        w.changes += 1
        return load

    def stop(self, load_id: str) -> Load:
        w = self.world
        load = w.loads.get(load_id)
        if load is None:
            raise invalid(f"No traffic '{load_id[:80]}'.", "id")
        now = w.advance()
        if load.end is None or load.end > now:
            load.end = now
        w.changes += 1
        return load

    def until(self, t: float) -> None:
        """Integrate every running load up to ``t`` (the world's state is what holds until then)."""
        for load in self.world.loads.values():
            stop = min(t, load.end) if load.end is not None else t
            if stop > load.last:
                self._run(load, stop)

    def _route(self, load: Load) -> Route:
        w = self.world
        if load.gateway:
            return w.app_gateways.route(w.app_gateways.get(load.rg, load.gateway), load.rule)
        return w.load_balancers.route(w.load_balancers.get(load.rg, load.lb), load.rule)

    def _run(self, load: Load, t: float) -> None:
        try:
            route = self._route(load)
        except ArmError:  # the front or its rule is gone: every request fails
            load.failed["no-backend"] = load.failed.get("no-backend", 0.0) + load.rps * (t - load.last)
            load.last = t
            return
        self._look(load, route, load.last)
        while load.last < t:
            a = load.last
            b = min(t, a + TICK, *(d for d in load.leaving.values() if d > a))
            eligible = [m for m in route.members if route.up(m, a)]
            arrivals = load.rps * (b - a)
            for m in eligible:  # what each gets, since and until when (its in-flight requests build up, then decay)
                was = load.routed.get(m.name)
                since = was[2] if was is not None and was[1] >= a else a
                load.routed[m.name] = [load.rps / len(eligible), b, since]
            if not eligible:
                load.failed["no-backend"] = load.failed.get("no-backend", 0.0) + arrivals
            for m in eligible:
                share = arrivals / len(eligible)
                row = load.per_vm.setdefault(m.name, [0.0, 0.0])
                if availability.healthy(m.ss, m.inst):
                    load.served += share
                    row[0] += share
                else:
                    load.failed["probe-lag"] = load.failed.get("probe-lag", 0.0) + share
                    row[1] += share
            load.last = b
            for name in [n for n, d in load.leaving.items() if d <= b]:  # its connection draining is over
                del load.leaving[name]
                self._lose(load, name, b)
            load.sample()

    def _look(self, load: Load, route: Route, at: float) -> None:
        """What changed since the last look: a VM that stopped serving, or left the pool (deleted, or out of a
        gateway's pool: draining, then cut), loses the requests in flight on it; a draining VM back in the pool
        keeps them."""
        if load.leaving:
            vms = {member_name(ss, inst): (ss, inst) for ss in self.world.sets.values()
                   for inst in ss.instances.values()}
            for name in list(load.leaving):
                vm = vms.get(name)
                if vm is None or not availability.healthy(*vm):  # stopped or deleted while draining
                    del load.leaving[name]
                    self._lose(load, name, at)
        names = set()
        for m in route.members:
            names.add(m.name)
            load.leaving.pop(m.name, None)
            serving = availability.healthy(m.ss, m.inst)
            if load.serving.get(m.name, serving) and not serving:
                self._lose(load, m.name, at)
            load.serving[m.name] = serving
        for name in [n for n in load.serving if n not in names]:
            if load.serving.pop(name):
                if route.drain:
                    load.leaving[name] = at + route.drain
                else:
                    self._lose(load, name, at)

    @staticmethod
    def _lose(load: Load, name: str, at: float) -> None:
        """The requests still in flight on VM ``name`` at ``at`` fail (they were counted served as they came)."""
        rate, until, since = load.routed.get(name, [0.0, at, at])
        gap, served_for = max(0.0, at - until), max(0.0, until - since)
        short = rate * (1 - load.long_share) * _in_flight(load.mean_duration, served_for, gap)
        long = rate * load.long_share * _in_flight(load.long_lifetime, served_for, gap)
        row = load.per_vm.setdefault(name, [0.0, 0.0])
        lost = min(short + long, row[0])
        load.failed["cut"] = load.failed.get("cut", 0.0) + lost
        load.served -= lost
        row[0], row[1] = row[0] - lost, row[1] + lost


def _in_flight(lifetime: float, served_for: float, since_last: float) -> float:
    """Requests in flight per unit of arrival rate: they arrived for ``served_for`` seconds and each lasts
    ``lifetime`` on average (exponentially), the last of them ``since_last`` seconds ago."""
    return lifetime * (1 - math.exp(-served_for / lifetime)) * math.exp(-since_last / lifetime)


def _bounded(body: dict, key: str, low: float, high: float, default: float | None) -> float:
    value = body.get(key, default)
    if value is None:
        raise invalid(f"'{key}' is required.", key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or \
            not low <= value <= high:
        raise invalid(f"'{key}' must be a number from {low:g} to {high:g}.", key)
    return float(value)
