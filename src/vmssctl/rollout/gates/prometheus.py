"""The Prometheus gate: a PromQL instant query, per instance when it names an instance field
(``{instance_id}``), else once per batch; its single value is ``result`` in the conditions."""

from __future__ import annotations

import math
import urllib.parse
from dataclasses import dataclass
from typing import ClassVar

from vmssctl import inputs
from vmssctl.model import Instance
from vmssctl.rollout.gates.base import Context, Verdict, url
from vmssctl.rollout.gates.measure import MEASURED, GateError, Measured, get_json, measure_each
from vmssctl.rollout.gates.registry import Deps, register


@register
@dataclass
class PrometheusGate:
    address: str
    query: str
    measured: Measured
    kind: ClassVar[str] = "prometheus"
    settings: ClassVar[frozenset[str]] = frozenset({"address", "query"}) | MEASURED

    @classmethod
    def from_spec(cls, spec: dict, what: str, deps: Deps) -> PrometheusGate:
        query = inputs.text(spec.get("query"), f"{what} query")
        return cls(url(spec.get("address"), f"{what} address"), query, Measured.from_spec(spec, what))

    def _value(self, query: str) -> object:
        return instant(self.address, query)

    def check(self, ctx: Context, instances: list[Instance]) -> dict[str, Verdict]:
        return measure_each(self.measured, self.query, ctx, instances, self._value, "prometheus {}")


def instant(address: str, query: str) -> float:
    """One PromQL instant query's single value (a scalar, or a vector of one series)."""
    body = get_json(f"{address.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}")
    if not isinstance(body, dict) or body.get("status") != "success":
        raise GateError(f"Prometheus refused the query: {inputs.shown(str(body))}")
    data = body.get("data") or {}
    result = data.get("result")
    if data.get("resultType") == "scalar" and isinstance(result, list) and len(result) == 2:
        return float(result[1])
    if data.get("resultType") == "vector" and isinstance(result, list):
        if len(result) != 1:
            raise GateError(f"the query returned {len(result)} series, not one")
        value = float(result[0]["value"][1])
        if math.isnan(value):
            raise GateError("the query returned NaN")
        return value
    raise GateError(f"unexpected Prometheus result type {data.get('resultType')!r}")
