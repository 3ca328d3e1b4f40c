"""Every value a user types is parsed and bounded where it comes in: tables of cases, then random input.

The tables run in milliseconds (no emulator, no subprocess); the random CLI input is aimed at a frozen
emulator holding a real scale set, and checks that nothing there changed.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmssctl import inputs
from vmssctl.cli import main
from vmssctl.errors import UsageError
from vmssctl.model import Instance
from vmssctl.plan import Plan, fit_to_floor, make_plan, max_unavailable, takes_everything_down
from vmssctl.policy import Amount, RolloutPolicy, load
from vmssctl.target import ImageChange


def _digits(text: str, zero: int) -> str:
    """``text`` with its ASCII digits written in another script's digits (which int() would accept)."""
    return "".join(chr(zero + int(c)) if c.isdigit() else c for c in text)


FULLWIDTH = _digits("24.04.202611200", 0xFF10)
ARABIC_INDIC = _digits("24.04.202611200", 0x0660)
FW2 = _digits("2", 0xFF10)


@pytest.mark.parametrize("value, ok", [
    ("24.04.202611200", True), ("latest", True), ("LATEST", True), ("0.0.0", True),
    (f"1.2.{2**31 - 1}", True), (f"1.2.{2**31}", False), ("1.2." + "9" * 5000, False),
    (FULLWIDTH, False), (ARABIC_INDIC, False), ("24.04.202611200\n", False), (" 24.04.1", False),
    ("24.04", False), ("24.04.1.2", False), ("", False), ("1.2.-3", False), ("1.2.3x", False),
])
def test_versions_are_ascii_major_minor_build_with_32_bit_parts(value, ok):
    if ok:
        assert inputs.version(value) in (value, "latest")
    else:
        with pytest.raises(UsageError):
            inputs.version(value)
        with pytest.raises(UsageError):
            ImageChange(version=value).validate()


@pytest.mark.parametrize("value, low, high, expect", [
    ("3", 0, 1000, 3), (3, 0, 1000, 3), ("0", 0, 1000, 0), ("1000", 0, 1000, 1000), ("1001", 0, 1000, None),
    (str(10**30), 0, 1000, None), ("-1", 0, 1000, None), (FW2, 0, 1000, None), ("3.0", 0, 1000, None),
    (True, 0, 1000, None), ("", 0, 1000, None), ("0", 1, 1000, None),
])
def test_counts_are_ascii_and_bounded(value, low, high, expect):
    if expect is None:
        with pytest.raises(UsageError):
            inputs.count(value, "--n", low, high)
    else:
        assert inputs.count(value, "--n", low, high) == expect


@pytest.mark.parametrize("value, seconds", [
    ("90", 90), ("90s", 90), ("2m", 120), ("1h30m", 5400), ("PT2M", 120), (30, 30), ("0", 0),
    ("nan", None), ("inf", None), ("1e9", None), ("-5", None), ("8d", None), ("999999h", None), ("", None),
    ("2m\n", None), (FW2 + "m", None),
])
def test_durations(value, seconds):
    if seconds is None:
        with pytest.raises(UsageError):
            inputs.duration(value, "--pause")
    else:
        assert inputs.duration(value, "--pause") == seconds


@pytest.mark.parametrize("value, ok", [
    ("3,7,9", True), ("3", True), ("", False), (",", False), (" , ", False), ("3,-x", False), ("3,x y", False),
    ("web_1a2b3c4d,web_00ff00ff", True), ("web_1a2b3c4d.", False), ("w" * 65, False),
    (_digits("3", 0x0660), False),
    (",".join(str(i) for i in range(1001)), False), ("007", True),
])
def test_instance_ids(value, ok):
    if ok:
        assert inputs.instance_ids(value)
    else:
        with pytest.raises(UsageError):
            inputs.instance_ids(value)


def test_amounts_are_bounded_counts_or_percentages():
    assert Amount.parse("20%", "--m") == Amount(20.0, True)
    assert Amount.parse("3", "--m") == Amount(3, False)
    assert Amount.parse("100%", "--m").everything
    for bad in ("101%", "nan%", "-1", str(10**30), "1e3", "%", FW2):
        with pytest.raises(UsageError):
            Amount.parse(bad, "--m")


# ------------------------------------------------------------------------------- policy files
def test_policy_file_must_be_a_small_regular_file(tmp_path):
    with pytest.raises(UsageError, match="not a regular file"):
        load(str(tmp_path), {})
    with pytest.raises(UsageError, match="not a regular file"):
        load("/dev/zero", {})
    with pytest.raises(UsageError, match="does not exist"):
        load(str(tmp_path / "missing.toml"), {})
    with pytest.raises(UsageError, match="must name a file"):
        load("", {})
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * 70_000)
    with pytest.raises(UsageError, match="bytes"):
        load(str(big), {})
    ok = tmp_path / "ok.toml"
    ok.write_text('[rollout]\nbatch_size = 3\npause = "2m"\nmax_unavailable = "20%"\n')
    policy = load(str(ok), {})
    assert (policy.batch_size, policy.pause, policy.max_unavailable) == (3, 120.0, Amount(20.0, True))
    for text in ('batch_size = 100000', 'batch_size = "lots"', 'canary = -1', 'pause = "nan"', 'instances = ""',
                 'batch_percent = 0', 'batch_size = true', '[rollout]\nrollout = 3'):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(UsageError):
            load(str(bad), {})


# ------------------------------------------------------------------------------- the plan's floor
def _inst(i: int, healthy: bool = True) -> Instance:
    from vmssctl.model import ImageRef

    return Instance(str(i), i % 5, i % 5, None, "running", "succeeded", "healthy" if healthy else "unhealthy",
                    False, ImageRef(version="1"))


@pytest.mark.parametrize("capacity, flags, floor, everything", [
    # worked examples: the floor is capacity - max unavailable, where max unavailable is the largest batch
    (20, {}, 16, False),                                      # 20 % batches of 4: floor 16
    (20, {"batch_size": 5}, 15, False),
    (20, {"batch_size": 1000}, 1, False),                     # a batch size alone never takes all down
    (20, {"batch_size": 1000, "max_unavailable": "100%"}, 0, False),  # unless asked for, explicitly
    (20, {"max_unavailable": "20"}, 0, False),                # an explicit count of the capacity is explicit too
    (1, {}, 0, True),                                         # a one-VM set: only with --max-unavailable 100%
    (1, {"max_unavailable": "100%"}, 0, False),
    (4, {}, 3, False),                                        # small sets go one at a time
    (20, {"canary": 1, "batch_percent": 20}, 16, False),
    (20, {"max_unavailable": "1"}, 19, False),
])
def test_floor_table(capacity, flags, floor, everything):
    policy = load(None, flags)
    plan = make_plan([_inst(i) for i in range(capacity)], policy, lambda i: True)
    assert plan.floor == floor
    assert takes_everything_down(policy, plan) is everything
    assert all(len(b) <= plan.max_unavailable for b in plan.batches)


def test_fit_to_floor_spends_only_the_margin():
    by_id = {str(i): _inst(i, healthy=i != 3) for i in range(10)}  # 9 healthy
    assert fit_to_floor(["0", "1", "2", "3"], by_id, floor=8) == ["0", "3"]  # 3 is down already: free
    assert fit_to_floor(["0", "1"], by_id, floor=9) == []
    assert max_unavailable(RolloutPolicy(), 10, 30) == 9


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(capacity=st.integers(1, 60), size=st.integers(1, 2000), canary=st.integers(0, 80),
       healthy=st.lists(st.booleans(), min_size=60, max_size=60))
def test_no_plan_from_a_batch_size_takes_every_instance_down(capacity, size, canary, healthy):
    policy = RolloutPolicy(batch_size=min(size, 1000), canary=min(canary, 1000))
    instances = [_inst(i, healthy[i]) for i in range(capacity)]
    plan: Plan = make_plan(instances, policy, lambda i: True)
    assert plan.floor >= 1 or takes_everything_down(policy, plan)
    assert sorted((i for b in plan.batches for i in b), key=int) == [str(i) for i in range(capacity)]
    by_id = {i.instance_id: i for i in instances}
    for batch in plan.batches:
        kept = sum(1 for i in instances if i.healthy) - sum(1 for i in fit_to_floor(batch, by_id, plan.floor)
                                                              if by_id[i].healthy)
        assert kept >= min(plan.floor, sum(1 for i in instances if i.healthy))


# ------------------------------------------------------------------------------- the CLI, random input
UPGRADE = ["upgrade", "-g", "rg", "-n", "web", "--subscription", "00000000-0000-0000-0000-000000000001"]
FLAGS = ["--version", "--batch-size", "--batch-percent", "--canary", "--pause", "--max-unavailable",
         "--max-unhealthy-upgraded", "--health-timeout", "--instances", "--poll", "--journal", "--policy"]
junk = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "nan", "inf", "-1", "1e308", str(10**30), FULLWIDTH, ARABIC_INDIC, "\n", "1.2.3\n",
                     "100000", "0", "%", "101%", "-5%", "1" * 5000, "../../etc/passwd\0"]),
)


def _bad_for(flag: str, value: str) -> bool:
    """Is ``value`` refused for ``flag``? (a few values are valid and would reach for a connection)"""
    parse = {
        "--version": lambda v: inputs.version(v),
        "--batch-size": lambda v: inputs.count(v, flag, 1),
        "--batch-percent": lambda v: inputs.percent(v, flag, low_open=True),
        "--canary": lambda v: inputs.count(v, flag, 0),
        "--pause": lambda v: inputs.duration(v, flag),
        "--health-timeout": lambda v: inputs.duration(v, flag) >= 1 or (_ for _ in ()).throw(UsageError("x")),
        "--poll": lambda v: inputs.duration(v, flag) >= 1 or (_ for _ in ()).throw(UsageError("x")),
        "--max-unavailable": lambda v: Amount.parse(v, flag),
        "--max-unhealthy-upgraded": lambda v: Amount.parse(v, flag),
        "--instances": lambda v: inputs.instance_ids(v),
        "--journal": lambda v: inputs.journal(v, flag),
        "--policy": lambda v: inputs.read_small_file(v, flag),
    }[flag]
    try:
        parse(value)
    except UsageError:
        return True
    return False


@pytest.fixture(scope="module")
def emulator_args(frozen):
    """Point the CLI at the frozen emulator (a real set), so a slip past the parsers would be seen as a write."""
    from tests.helpers import make_set

    rg = make_set(frozen, 2)
    return ["upgrade", "-g", rg, "-n", "web", "--emulator", str(frozen.state_dir)]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(FLAGS), value=junk)
def test_bad_flag_values_give_one_line_exit_2_and_change_nothing(capsys, frozen, emulator_args, flag, value):
    if not _bad_for(flag, value) or value.startswith("-"):
        return  # valid (or read by argparse as a flag): not this test's business
    before = frozen.admin("GET", "stats")["stateChanges"]
    code = main([*emulator_args, f"{flag}={value}", "--yes"])
    assert frozen.admin("GET", "stats")["stateChanges"] == before
    out, err = capsys.readouterr()
    assert code == 2, (flag, value, err)
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [
    ["--instances", ""], ["--journal", ""], ["--journal", "postgresql://nobody@127.0.0.1:1/x"],
    ["--policy", "/"], ["--policy", "/dev/urandom"],
    ["--version", FULLWIDTH], ["--version", "24.04.202611200\n"], ["--batch-size", str(10**30)],
    ["--canary", "100000"], ["--batch-percent", "nan"], ["--pause", "inf"], ["-g", "x" * 5000],
    ["-n", "web\0"], ["-n", "wéb"],
])
def test_known_bad_upgrade_inputs(capsys, argv):
    args = list(UPGRADE)
    for flag, value in zip(argv[::2], argv[1::2], strict=True):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    code = main([*args, "--dry-run"])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("argv", [
    ["emulator", "--time-scale", "nan"], ["emulator", "--latency-ms", "1e12"], ["emulator", "--port", "70000"],
    ["emulator", "--page-size", "0"], ["emulator", "--error-rate", "2"], ["dashboard", "--refresh", "0.1x"],
    ["heatmap", "-g", "rg", "-n", "web", "--refresh", "inf"], ["rollout", "status", "x" * 100],
    ["show", "-g", "rg", "-n", "web", "--subscription", "not-a-guid"],
    ["rollout", "list", "--journal", "postgresql://nobody@127.0.0.1:1/x"],
    ["fleet", "run", "fleet.toml", "--database", "postgresql://a@127.0.0.1:1/db", "--journal", "j.sqlite"],
])
def test_other_commands_bound_their_numbers(capsys, argv):
    code = main(argv)
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1, err


def test_percent_accepts_the_percent_sign_and_rejects_nonfinite():
    assert inputs.percent("12.5%", "--p") == 12.5
    assert math.isclose(inputs.percent(20, "--p"), 20)
    for bad in ("nan", "inf", "1e2", "101", "-0.5"):
        with pytest.raises(UsageError):
            inputs.percent(bad, "--p")
