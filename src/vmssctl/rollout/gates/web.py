"""The web gate: GET a JSON document (per instance when the URL names one of its fields), pick a value with a
JSONPath (``$.a.b[0]``); it is ``result`` in the conditions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from vmssctl import inputs
from vmssctl.errors import UsageError
from vmssctl.model import Instance
from vmssctl.rollout.gates.base import Context, Verdict, url
from vmssctl.rollout.gates.measure import MEASURED, GateError, Measured, get_json, measure_each
from vmssctl.rollout.gates.registry import Deps, register

_JSONPATH = re.compile(r"\$((\.[A-Za-z_][\w-]*)|(\[\d+\])|(\['[^']*'\]))*")


@register
@dataclass
class WebGate:
    url: str
    path: str
    measured: Measured
    kind: ClassVar[str] = "web"
    settings: ClassVar[frozenset[str]] = frozenset({"url", "jsonpath"}) | MEASURED

    @classmethod
    def from_spec(cls, spec: dict, what: str, deps: Deps) -> WebGate:
        path = inputs.text(spec.get("jsonpath", "$"), f"{what} jsonpath", 256)
        if not _JSONPATH.fullmatch(path):
            raise UsageError(f"{what} jsonpath '{inputs.shown(path)}' is not like $.data.errorRate or $.items[0].ok")
        return cls(url(spec.get("url"), f"{what} url"), path, Measured.from_spec(spec, what))

    def _value(self, target: str) -> object:
        node = get_json(target)
        for key in re.findall(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]|\['([^']*)'\]", self.path):
            name, index, quoted = key
            try:
                node = node[int(index)] if index else node[name or quoted]  # type: ignore[index]
            except (KeyError, IndexError, TypeError):
                raise GateError(f"{self.path} not found in the answer of {target}") from None
        return node

    def check(self, ctx: Context, instances: list[Instance]) -> dict[str, Verdict]:
        return measure_each(self.measured, self.url, ctx, instances, self._value, f"web {{}} {self.path}")
