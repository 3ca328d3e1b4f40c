"""Gates as providers: conditions, specs and measurements as tables, the registry and the factory; each
provider's own test is beside this one (test_gate_probe, _hook, _prometheus, _web)."""

from __future__ import annotations

import shutil

import pytest

from tests.helpers import NEW, make_set
from vmssctl.errors import UsageError
from vmssctl.model import ImageRef, Instance
from vmssctl.rollout.gates import BAD, GOOD, WAIT, Condition, Context, Measured, build, fill, from_spec

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


@pytest.mark.parametrize("text, result, holds", [
    ("result < 0.05", 0.01, True), ("result < 0.05", 0.5, False), ("result >= 0.99 and result <= 1", 1, True),
    ("result == true", True, True), ("result == true", False, False), ("not result", False, True),
    ('result == "ok"', "ok", True), ("result < 0.05", "n/a", False), ("0 < result < 10", 5, True),
    ("result == -1", -1, True),
])
def test_conditions(text, result, holds):
    assert Condition.parse(text, "c").holds(result) is holds


@pytest.mark.parametrize("text", ["__import__('os')", "result.real", "open('x')", "result +", "x < 1", "", "1;2",
                                  "result < 1\n"])
def test_conditions_refuse_anything_but_comparisons(text):
    with pytest.raises(UsageError):
        Condition.parse(text, "c")


@pytest.mark.parametrize("spec, error", [
    ({"kind": "prometheus", "address": "http://p:9090", "query": "up", "success": "result == 1"}, None),
    ({"kind": "prometheus", "address": "ftp://p", "query": "up", "success": "result == 1"}, "http"),
    ({"kind": "prometheus", "address": "http://p:9090", "success": "result == 1"}, "query"),
    ({"kind": "prometheus", "address": "http://p:9090", "query": "up", "count": 1000}, "count"),
    ({"kind": "web", "url": "http://h/{instance_id}", "jsonpath": "$.a[0].b"}, None),
    ({"kind": "web", "url": "http://h/", "jsonpath": "a.b"}, "jsonpath"),
    ({"kind": "hook", "command": "true", "url": "x"}, "unknown"),
    ({"kind": "canary"}, "kind"),
    ("probe", "table"),
])
def test_gate_specs_are_checked_when_the_policy_is_read(spec, error):
    if error is None:
        assert from_spec(spec).kind == spec["kind"]
    else:
        with pytest.raises(UsageError, match=error):
            from_spec(spec)


def test_fields_fill_only_known_names():
    assert fill('rate(errors{vm="{instance_id}"}[1m])', {"instance_id": "7"}) == 'rate(errors{vm="7"}[1m])'


def test_measurements_follow_count_interval_and_failure_limit():
    m = Measured(Condition.parse("result < 0.1", "s"), None, interval=30, count=3, failure_limit=1)
    values = iter([0.0, 0.5, 0.0, 0.0])
    take = lambda: next(values)  # noqa: E731
    assert m.measure((1, "0"), 0, take, "q").state == WAIT        # 1 success of 3
    assert m.measure((1, "0"), 10, take, "q").state == WAIT       # within the interval: not measured again
    assert m.measure((1, "0"), 30, take, "q").state == WAIT       # 1 failure: within the limit
    assert m.measure((1, "0"), 60, take, "q").state == WAIT       # 2 successes
    passed = m.measure((1, "0"), 90, take, "prometheus q")
    assert passed.state == GOOD  # 3 successes; and what it measured goes into the batch's record
    assert passed.figure == {"gate": "prometheus", "measured": "prometheus q = 0.0 (4 measurement(s), 1 failed)"}
    strict = Measured(Condition.parse("result < 0.1", "s"), Condition.parse("result > 0.3", "f"), 1, 5, 0)
    failed = strict.measure((1, "0"), 0, lambda: 0.5, "web u")
    assert failed.state == BAD and failed.figure["measured"] == "web u = 0.5 (1 measurement(s), 1 failed)"


def test_policy_file_gates(tmp_path):
    from vmssctl.policy import load

    path = tmp_path / "rollout.toml"
    path.write_text('[rollout]\ncanary = 1\n\n[[gates]]\nkind = "prometheus"\naddress = "http://prom:9090"\n'
                    'query = \'sum(rate(http_errors{vm="{instance_id}"}[1m]))\'\nsuccess = "result < 0.05"\n'
                    'count = 3\ninterval = "1m"\nfailure_limit = 1\n\n[[gates]]\nkind = "web"\n'
                    'url = "http://10.0.0.{instance_id}/health"\njsonpath = "$.ok"\n')
    policy = load(str(path), {})
    assert [g.kind for g in build(policy.all_gates())] == ["prometheus", "web"]
    path.write_text('[[gates]]\nkind = "prometheus"\naddress = "http://prom:9090"\nquery = "up"\nsuccess = "rm -rf"\n')
    with pytest.raises(UsageError):
        load(str(path), {})


def test_a_gate_is_a_health_signal(frozen, up):
    rg = make_set(frozen, 3, health=False)
    code, events, err = up(rg, "--version", NEW, "--dry-run", "--web-url", "http://127.0.0.1:9/x")
    assert code == 0, err
    assert events[0]["healthSignal"] == "web check"


def _inst(i: int) -> Instance:
    return Instance(str(i), 0, 0, None, "running", "succeeded", "healthy", True, ImageRef(version="1"))


def test_a_per_batch_query_gives_every_instance_one_verdict():
    gate = from_spec({"kind": "prometheus", "address": "http://127.0.0.1:9", "query": "sum(errors)",
                      "success": "result < 1"})
    verdicts = gate.check(Context("rg", "web", 1, 0.0), [_inst(0), _inst(1)])
    assert set(verdicts) == {"0", "1"} and verdicts["0"] == verdicts["1"]
    assert verdicts["0"].state == BAD and "failed" in verdicts["0"].reason  # unreachable: an error measurement


def test_a_new_provider_is_a_registered_class_built_with_what_it_needs():
    """A provider is a class registered by kind; the factory checks its settings and hands it the Deps (the
    connection, for a gate that asks Azure's own APIs): nothing else in vmssctl needs to know about it."""
    from dataclasses import dataclass
    from typing import ClassVar

    from vmssctl.rollout.gates import PROVIDERS, Deps, Verdict, register

    @register
    @dataclass
    class Constant:
        answer: str
        deps: Deps
        kind: ClassVar[str] = "constant"
        settings: ClassVar[frozenset[str]] = frozenset({"answer"})

        @classmethod
        def from_spec(cls, spec: dict, what: str, deps: Deps) -> Constant:
            return cls(str(spec.get("answer", GOOD)), deps)

        def check(self, ctx: Context, instances: list[Instance]) -> dict[str, Verdict]:
            return {i.instance_id: Verdict(self.answer) for i in instances}

    try:
        deps = Deps(connection="conn")
        gate, = build(({"kind": "constant", "answer": WAIT},), deps)
        assert gate.deps is deps and gate.check(Context("rg", "web", 1, 0.0), [_inst(3)]) == {"3": Verdict(WAIT)}
        with pytest.raises(UsageError, match=r"gate 1 \(constant\): unknown setting\(s\) colour"):
            build(({"kind": "constant", "colour": "red"},))
    finally:
        PROVIDERS.pop("constant")
