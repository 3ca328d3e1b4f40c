"""Measured gates (Prometheus, web): a value taken every ``interval``, ``count`` successes pass, more failures
than ``failure_limit`` fail, as Argo Rollouts' analysis runs do; per instance when the template names one of
its fields, else once per batch."""

from __future__ import annotations

import functools
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from vmssctl import inputs
from vmssctl.model import Instance
from vmssctl.rollout.gates.base import BAD, GOOD, WAIT, Context, Verdict, fields, fill, per_instance
from vmssctl.rollout.gates.conditions import Condition

MEASURED = frozenset({"success", "failure", "interval", "count", "failure_limit"})  # their settings


class GateError(Exception):
    """A measurement could not be taken (the metrics source is down, or answered nonsense)."""


@dataclass
class Measured:
    success: Condition
    failure: Condition | None
    interval: float
    count: int
    failure_limit: int
    history: dict[tuple[int, str], list[tuple[float, str]]] = field(default_factory=dict)
    last: str = ""  # what the latest measurement saw, for the verdict's reason

    @classmethod
    def from_spec(cls, spec: dict, what: str) -> Measured:
        return cls(
            success=Condition.parse(spec.get("success", "result == true"), f"{what} success"),
            failure=Condition.parse(spec["failure"], f"{what} failure") if spec.get("failure") else None,
            interval=inputs.duration(spec.get("interval", "30s"), f"{what} interval", 3600),
            count=inputs.count(spec.get("count", 1), f"{what} count", 1, 100),
            failure_limit=inputs.count(spec.get("failure_limit", 0), f"{what} failure_limit", 0, 100))

    def measure(self, key: tuple[int, str], now: float, take: Callable[[], object], what: str) -> Verdict:
        runs = self.history.setdefault(key, [])
        if not runs or now - runs[-1][0] >= self.interval:
            try:
                value = take()
                failed = (self.failure is not None and self.failure.holds(value)) or \
                    (self.failure is None and not self.success.holds(value))
                outcome = "failed" if failed else ("successful" if self.success.holds(value) else "inconclusive")
                detail = f"{what} = {value!r}"
            except GateError as e:
                outcome, detail = "error", f"{what}: {e}"
            runs.append((now, outcome))
            self.last = detail
        failures = sum(1 for _, o in runs if o in ("failed", "error"))
        # what it measured, for the record of the batch (a passing gate leaves its figure too, not only a failing)
        figure = {"gate": what.split(" ", 1)[0], "measured": f"{self.last} ({len(runs)} measurement(s), "
                                                             f"{failures} failed)"}
        if failures > self.failure_limit:
            return Verdict(BAD, f"{self.last} ({failures} of {len(runs)} measurements failed, limit "
                                f"{self.failure_limit})", figure)
        if sum(1 for _, o in runs if o == "successful") >= self.count:
            return Verdict(GOOD, None, figure)
        return Verdict(WAIT, f"{self.last} ({len(runs)} of {self.count} measurements)")


def get_json(url: str, timeout: float = 10) -> object:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": "application/json"}),
                                    timeout=timeout) as r:
            return json.loads(r.read(1_000_000))
    except urllib.error.HTTPError as e:
        raise GateError(f"{url} answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise GateError(f"{url} failed: {getattr(e, 'reason', e)}") from None


def measure_each(measured: Measured, template: str, ctx: Context, instances: list[Instance],
                 value: Callable[[str], object], label: str) -> dict[str, Verdict]:
    """Measure per instance when the template names an instance field, else once for the whole batch."""
    if per_instance(template):
        out = {}
        for inst in instances:
            filled = fill(template, fields(ctx, inst))
            out[inst.instance_id] = measured.measure((ctx.batch, inst.instance_id), ctx.now,
                                                     functools.partial(value, filled), label.format(filled))
        return out
    filled = fill(template, fields(ctx, instances[0])) if instances else template
    verdict = measured.measure((ctx.batch, "*"), ctx.now, lambda: value(filled), label.format(filled))
    return {i.instance_id: verdict for i in instances}
