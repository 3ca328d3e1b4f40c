"""The requests gate: users' requests while a batch was out, the share that failed, against a limit.

Counted over the batch's own window, from when it started (upgraded, drained or scaled out) to now: from
Prometheus (two PromQL queries whose ``{window}`` is that span in seconds, e.g.
``sum(increase(http_requests_total[{window}s]))`` and the same for the failed ones), or from the emulator's
traffic on a load balancer or an Application Gateway (``source = "emulator"``: what ``make demo`` and the tests
measure). Stateless: a
resumed rollout asks again over the batch's recorded start. Each verdict carries the figures, so a judged batch
records them (the ``measured`` event: the rollout's record, live view and dashboard timeline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from vmssctl import inputs
from vmssctl.errors import UsageError, VmssctlError
from vmssctl.model import Instance
from vmssctl.rollout.gates.base import BAD, GOOD, WAIT, Context, Verdict, url
from vmssctl.rollout.gates.measure import GateError
from vmssctl.rollout.gates.prometheus import instant
from vmssctl.rollout.gates.registry import Deps, register

SOURCES = ("prometheus", "emulator")
FRONTS = {"load_balancer": "loadBalancer", "application_gateway": "applicationGateway"}  # setting -> traffic's key


@register
@dataclass
class RequestsGate:
    source: str
    max_ratio: float  # a share, 0..1
    min_window: float  # seconds of the batch's window before a verdict
    address: str = ""
    total: str = ""
    failed: str = ""
    front: tuple[str, str, str] = ("", "", "")  # emulator: (loadBalancer | applicationGateway, group, name)
    deps: Any = None
    kind: ClassVar[str] = "requests"
    settings: ClassVar[frozenset[str]] = frozenset({"source", "max_failed", "min_window", "address", "total",
                                                    "failed", *FRONTS})

    @classmethod
    def from_spec(cls, spec: dict, what: str, deps: Deps) -> RequestsGate:
        source = str(spec.get("source", "prometheus"))
        if source not in SOURCES:
            raise UsageError(f"{what} source '{inputs.shown(source)}' is not one of {', '.join(SOURCES)}")
        ratio = inputs.percent(spec.get("max_failed", "0%"), f"{what} max_failed") / 100
        window = inputs.duration(spec.get("min_window", "0s"), f"{what} min_window", 3600)
        if source == "emulator":
            named = [k for k in FRONTS if k in spec]
            if len(named) != 1:
                raise UsageError(f"{what} needs one of load_balancer or application_gateway (RESOURCE_GROUP/NAME)")
            front = inputs.text(spec.get(named[0]), f"{what} {named[0]}", 200)
            if front.count("/") != 1 or not all(front.split("/")):
                raise UsageError(f"{what} {named[0]} '{inputs.shown(front)}' is not RESOURCE_GROUP/NAME")
            rg, name = front.split("/")
            return cls(source, ratio, window, front=(FRONTS[named[0]], rg, name), deps=deps)
        queries = {k: inputs.text(spec.get(k), f"{what} {k}") for k in ("total", "failed")}
        return cls(source, ratio, window, url(spec.get("address"), f"{what} address"), queries["total"],
                   queries["failed"])

    def _counts(self, since: float, now: float) -> tuple[float, float]:
        """(requests, failed) from ``since`` to ``now``."""
        if self.source == "emulator":
            from vmssctl.emulator.admin import AdminClient

            conn = getattr(self.deps, "connection", None)
            if conn is None or not conn.is_emulator:
                raise GateError("source 'emulator' needs a rollout on the emulator")
            key, rg, name = self.front
            try:
                loads = AdminClient(conn).call("GET", f"traffic?since={since}")["traffic"]
            except VmssctlError as e:
                raise GateError(str(e)) from None
            mine = [x["window"] for x in loads if x["resourceGroup"].lower() == rg.lower()
                    and str(x.get(key, "")).lower() == name.lower()]
            return float(sum(w["requests"] for w in mine)), float(sum(w["failed"] for w in mine))
        window = str(max(1, round(now - since)))
        return (instant(self.address, self.total.replace("{window}", window)),
                instant(self.address, self.failed.replace("{window}", window)))

    def check(self, ctx: Context, instances: list[Instance]) -> dict[str, Verdict]:
        since = ctx.started if ctx.started is not None else ctx.now
        span = ctx.now - since
        if span < self.min_window:
            verdict = Verdict(WAIT, f"requests: {span:.0f}s of the {self.min_window:.0f}s window measured")
            return dict.fromkeys((i.instance_id for i in instances), verdict)
        try:
            total, failed = self._counts(since, ctx.now)
        except GateError as e:
            verdict = Verdict(WAIT, f"requests: {e}")
            return dict.fromkeys((i.instance_id for i in instances), verdict)
        ratio = failed / total if total > 0 else 0.0
        figure = {"gate": "requests", "requests": round(total), "failed": round(failed), "ratio": ratio,
                  "seconds": round(span)}
        text = f"{round(failed):,} of {round(total):,} requests failed ({ratio:.3%}) in {span:.0f}s"
        verdict = Verdict(BAD, f"{text}, more than {self.max_ratio:.3%}", figure) if ratio > self.max_ratio \
            else Verdict(GOOD, text, figure)
        return dict.fromkeys((i.instance_id for i in instances), verdict)
