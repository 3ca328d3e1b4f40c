"""Is an upgraded instance good? ARM's view first, then the gates the policy declares.

ARM's view (``judge``): failed provisioning is ``bad`` at once; an upgrade still running,
or ``initializing`` health, is ``wait``; ``unhealthy`` (reported only after the Application
Health extension's grace period) is ``bad`` at once.

Then every gate of the policy, each a provider with one method, ``check`` (as Argo Rollouts'
analysis providers): an HTTP probe, a command hook, a Prometheus query, a web (JSON) check.
A gate answers per instance ``good``, ``wait`` (not passing yet: ``bad`` once the health
timeout runs out) or ``bad`` (a definite failure, e.g. a Prometheus failure limit reached),
and a bad gate fails the batch like an unhealthy instance.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import os
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from vmssctl import inputs
from vmssctl.errors import UsageError
from vmssctl.model import Instance

GOOD, BAD, WAIT = "good", "bad", "wait"
KINDS = ("probe", "hook", "prometheus", "web")


@dataclass(frozen=True)
class Verdict:
    state: str
    reason: str | None = None


def judge(inst: Instance, on_target: bool, elapsed: float, timeout: float) -> Verdict:
    """ARM's view of one upgraded instance (no gates)."""
    late = elapsed >= timeout
    if inst.provisioning == "failed":
        return Verdict(BAD, inst.error or "provisioning failed")
    if not on_target or inst.provisioning != "succeeded" or inst.power != "running":
        return Verdict(BAD, f"still {inst.provisioning}/{inst.power} after {timeout:.0f}s") if late else Verdict(WAIT)
    if inst.health == "unhealthy":
        # the Application Health extension says 'initializing' through its grace period, so 'unhealthy' on an
        # upgraded, running VM is a verdict already: fail the batch now, not when the health timeout runs out
        return Verdict(BAD, "HealthState/unhealthy after the health extension's grace period")
    if inst.health not in (None, "healthy"):
        if late:
            return Verdict(BAD, f"HealthState/{inst.health} after {timeout:.0f}s")
        return Verdict(WAIT)
    return Verdict(GOOD)


@dataclass(frozen=True)
class Context:
    """What a gate may use: the scale set, the batch and the time (the engine's clock)."""

    resource_group: str
    name: str
    batch: int
    now: float


class Gate(Protocol):
    kind: str

    def check(self, ctx: Context, instances: list[Instance]) -> dict[str, Verdict]: ...


def fields(ctx: Context, inst: Instance) -> dict:
    """The template fields a gate's URL, command or query may use."""
    return {"instance_id": inst.instance_id, "resource_group": ctx.resource_group, "name": ctx.name,
            "update_domain": inst.update_domain, "fault_domain": inst.fault_domain, "zone": inst.zone or "",
            "batch": ctx.batch}


FIELDS = ("instance_id", "resource_group", "name", "update_domain", "fault_domain", "zone", "batch")
_FIELD = re.compile(r"\{(" + "|".join(FIELDS) + r")\}")


def fill(template: str, values: dict) -> str:
    """Put the fields into a template. Only ``{instance_id}``-style names of FIELDS are replaced, so PromQL's
    own braces (``errors{vm="{instance_id}"}``) need no escaping."""
    return _FIELD.sub(lambda m: str(values[m.group(1)]), template)


def _per_instance(template: str) -> bool:
    return any(f"{{{f}}}" in template for f in ("instance_id", "update_domain", "fault_domain", "zone"))


# ------------------------------------------------------------------------------ conditions
_NODES = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare, ast.Eq,
          ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Name, ast.Load, ast.Constant)


@dataclass(frozen=True)
class Condition:
    """``result < 0.05``, ``result >= 0.99 and result <= 1``, ``result == true``: comparisons of ``result``.

    Parsed once (a bad condition is a usage error) and evaluated without ``eval``.
    """

    text: str
    tree: ast.Expression = field(compare=False, repr=False)

    @classmethod
    def parse(cls, text: object, what: str) -> Condition:
        source = inputs.text(text, what, 256)
        try:
            tree = ast.parse(re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", source)), mode="eval")
        except SyntaxError:
            raise UsageError(f"{what} '{inputs.shown(source)}' is not a condition such as 'result < 0.05'") from None
        for node in ast.walk(tree):
            if not isinstance(node, _NODES) or (isinstance(node, ast.Name) and node.id not in ("result", "True",
                                                                                               "False")):
                raise UsageError(f"{what} '{inputs.shown(source)}': only comparisons of 'result' with numbers, "
                                 "strings or true/false, joined by and/or/not")
        return cls(source, tree)

    def holds(self, result: object) -> bool:
        return bool(_eval(self.tree.body, result))


def _eval(node: ast.AST, result: object) -> object:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return {"result": result, "True": True, "False": False}[node.id]
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, result)
        return (not value) if isinstance(node.op, ast.Not) else -value  # type: ignore[operator]
    if isinstance(node, ast.BoolOp):
        values = (_eval(v, result) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, result)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, result)
            try:
                ok = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
                      ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b,
                      ast.GtE: lambda a, b: a >= b}[type(op)](left, right)
            except TypeError:  # e.g. a string against a number: the measurement does not satisfy it
                return False
            if not ok:
                return False
            left = right
        return True
    raise ValueError(f"unsupported condition node {type(node).__name__}")


# ------------------------------------------------------------------------------ providers
@dataclass
class ProbeGate:
    """GET a URL per instance; a 2xx answer passes."""

    url: str
    kind: str = "probe"

    def check(self, ctx: Context, instances: list[Instance]) -> dict[str, Verdict]:
        out = {}
        for inst in instances:
            url = fill(self.url, fields(ctx, inst))
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    out[inst.instance_id] = Verdict(GOOD) if 200 <= r.status < 300 else \
                        Verdict(WAIT, f"probe {url} answered {r.status}")
            except urllib.error.HTTPError as e:
                out[inst.instance_id] = Verdict(WAIT, f"probe {url} answered {e.code} {e.reason}")
            except (urllib.error.URLError, OSError, ValueError) as e:
                out[inst.instance_id] = Verdict(WAIT, f"probe {url} failed: {getattr(e, 'reason', e)}")
        return out


@dataclass
class HookGate:
    """Run a command per instance (fields also as ``VMSSCTL_*`` variables); exit 0 passes."""

    command: str
    kind: str = "hook"

    def check(self, ctx: Context, instances: list[Instance]) -> dict[str, Verdict]:
        out = {}
        for inst in instances:
            f = fields(ctx, inst)
            cmd = fill(self.command, f)
            env = {**os.environ, **{f"VMSSCTL_{k.upper()}": str(v) for k, v in f.items()}}
            try:
                r = subprocess.run(cmd, shell=True, env=env, capture_output=True, timeout=120)
            except subprocess.TimeoutExpired:
                out[inst.instance_id] = Verdict(WAIT, f"hook '{cmd}' timed out")
                continue
            out[inst.instance_id] = Verdict(GOOD) if r.returncode == 0 else \
                Verdict(WAIT, f"hook '{cmd}' exited {r.returncode}")
        return out


@dataclass
class Measured:
    """Argo-style analysis: measure every ``interval``, ``count`` times; more than ``failure_limit`` failed
    measurements fail the gate, ``count`` measurements within the limit pass it."""

    success: Condition
    failure: Condition | None
    interval: float
    count: int
    failure_limit: int
    history: dict[tuple[int, str], list[tuple[float, str]]] = field(default_factory=dict)
    last: str = ""  # what the latest measurement saw, for the verdict's reason

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
        if failures > self.failure_limit:
            return Verdict(BAD, f"{self.last} ({failures} of {len(runs)} measurements failed, limit "
                                f"{self.failure_limit})")
        if sum(1 for _, o in runs if o == "successful") >= self.count:
            return Verdict(GOOD)
        return Verdict(WAIT, f"{self.last} ({len(runs)} of {self.count} measurements)")


class GateError(Exception):
    """A measurement could not be taken (the metrics source is down, or answered nonsense)."""


def _get_json(url: str, timeout: float = 10) -> object:
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
    if _per_instance(template):
        out = {}
        for inst in instances:
            filled = fill(template, fields(ctx, inst))
            out[inst.instance_id] = measured.measure((ctx.batch, inst.instance_id), ctx.now,
                                                     functools.partial(value, filled), label.format(filled))
        return out
    filled = fill(template, fields(ctx, instances[0])) if instances else template
    verdict = measured.measure((ctx.batch, "*"), ctx.now, lambda: value(filled), label.format(filled))
    return {i.instance_id: verdict for i in instances}


@dataclass
class PrometheusGate:
    """A PromQL instant query, per instance when it names an instance field (``{instance_id}``), else once per
    batch for all of it; its single value is ``result`` in the conditions."""

    address: str
    query: str
    measured: Measured
    kind: str = "prometheus"

    def _value(self, query: str) -> object:
        url = f"{self.address.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
        body = _get_json(url)
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

    def check(self, ctx: Context, instances: list[Instance]) -> dict[str, Verdict]:
        return measure_each(self.measured, self.query, ctx, instances, self._value, "prometheus {}")


@dataclass
class WebGate:
    """GET a JSON document, pick a value with a JSONPath (``$.a.b[0]``); it is ``result`` in the conditions."""

    url: str
    path: str
    measured: Measured
    kind: str = "web"

    def _value(self, url: str) -> object:
        node = _get_json(url)
        for key in re.findall(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]|\['([^']*)'\]", self.path):
            name, index, quoted = key
            try:
                node = node[int(index)] if index else node[name or quoted]  # type: ignore[index]
            except (KeyError, IndexError, TypeError):
                raise GateError(f"{self.path} not found in the answer of {url}") from None
        return node

    def check(self, ctx: Context, instances: list[Instance]) -> dict[str, Verdict]:
        return measure_each(self.measured, self.url, ctx, instances, self._value, f"web {{}} {self.path}")


# ------------------------------------------------------------------------------ from the policy
_JSONPATH = re.compile(r"\$((\.[A-Za-z_][\w-]*)|(\[\d+\])|(\['[^']*'\]))*")


def _measured(spec: dict, what: str) -> Measured:
    return Measured(
        success=Condition.parse(spec.get("success", "result == true"), f"{what} success"),
        failure=Condition.parse(spec["failure"], f"{what} failure") if spec.get("failure") else None,
        interval=inputs.duration(spec.get("interval", "30s"), f"{what} interval", 3600),
        count=inputs.count(spec.get("count", 1), f"{what} count", 1, 100),
        failure_limit=inputs.count(spec.get("failure_limit", 0), f"{what} failure_limit", 0, 100))


def from_spec(spec: object, n: int = 1) -> Gate:
    """A gate from its policy entry (``[[gates]]`` in the TOML, or the flags); every value checked here."""
    what = f"gate {n}"
    if not isinstance(spec, dict):
        raise UsageError(f"{what} must be a table of settings")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise UsageError(f"{what}: kind must be one of {', '.join(KINDS)}")
    allowed = {"probe": {"url"}, "hook": {"command"},
               "prometheus": {"address", "query", "success", "failure", "interval", "count", "failure_limit"},
               "web": {"url", "jsonpath", "success", "failure", "interval", "count", "failure_limit"}}[kind]
    unknown = set(spec) - allowed - {"kind"}
    if unknown:
        raise UsageError(f"{what} ({kind}): unknown setting(s) {', '.join(sorted(unknown))}")
    what = f"{what} ({kind})"
    if kind == "probe":
        return ProbeGate(_url(spec.get("url"), f"{what} url"))
    if kind == "hook":
        return HookGate(inputs.text(spec.get("command"), f"{what} command"))
    if kind == "prometheus":
        query = inputs.text(spec.get("query"), f"{what} query")
        return PrometheusGate(_url(spec.get("address"), f"{what} address"), query, _measured(spec, what))
    path = inputs.text(spec.get("jsonpath", "$"), f"{what} jsonpath", 256)
    if not _JSONPATH.fullmatch(path):
        raise UsageError(f"{what} jsonpath '{inputs.shown(path)}' is not like $.data.errorRate or $.items[0].ok")
    return WebGate(_url(spec.get("url"), f"{what} url"), path, _measured(spec, what))


def _url(value: object, what: str) -> str:
    url = inputs.text(value, what)
    if not re.match(r"https?://[^\s/]+", url):
        raise UsageError(f"{what} '{inputs.shown(url)}' is not an http(s) URL")
    return url


def build(specs: tuple[dict, ...]) -> list[Gate]:
    return [from_spec(s, n) for n, s in enumerate(specs, 1)]


def combine(verdicts: list[Verdict], late: bool, timeout: float) -> Verdict:
    """One instance's gates together: any bad fails; any wait waits (and fails once the timeout is up)."""
    bad = next((v for v in verdicts if v.state == BAD), None)
    if bad:
        return bad
    waiting = next((v for v in verdicts if v.state == WAIT), None)
    if waiting:
        return Verdict(BAD, f"{waiting.reason} after {timeout:.0f}s") if late else waiting
    return Verdict(GOOD)
