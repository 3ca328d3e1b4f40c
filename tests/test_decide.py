"""decide() as tables (Kubernetes/Argo style): one observation and the phase in, one action out. No I/O."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vmssctl.model import ImageRef, Instance, ScaleSet
from vmssctl.policy import load
from vmssctl.rollout.decide import decide
from vmssctl.rollout.gates import BAD, GOOD, WAIT, Verdict
from vmssctl.rollout.journal import Batch
from vmssctl.rollout.turn import (
    MODEL_WAIT,
    DropAdded,
    Finish,
    Judge,
    ModelChanged,
    Observation,
    Pause,
    Phase,
    Reissue,
    Retire,
    ScaleOut,
    Soaked,
    Start,
    Stop,
    Wait,
    poll_delay,
    too_many_failed,
)

OLD, NEW = ImageRef("p", "o", "s", "1.0.0"), ImageRef("p", "o", "s", "2.0.0")
T0 = 1_000_000.0


def vm(i: int, image: ImageRef = OLD, health: str | None = "healthy", prov: str = "succeeded",
       power: str = "running", since: float | None = None) -> Instance:
    return Instance(str(i), i % 5, i % 5, None, power, prov, health, image == NEW,
                    replace(image, exact_version=image.version), health_since=since)


def model(image: ImageRef = NEW, state: str = "Succeeded", grace: float | None = 60.0) -> ScaleSet:
    return ScaleSet("rg", "web", "eastus", 10, "D2", image, "Manual", "Uniform", state, 5, (), '"1"',
                    health_grace=grace)


def batch(seq: int, ids: list[int], state: str = "issued", started: float = T0, finished: float | None = None,
          failed: list[int] = ()) -> Batch:
    return Batch("r", seq, "forward", [str(i) for i in ids], state, started, finished, [str(i) for i in failed])


def needs(i: Instance) -> bool:
    return not (i.latest_model and i.image.version == NEW.version)


FORWARD = Phase("forward")


def run(obs: Observation, phase: Phase = FORWARD, **policy: object):
    return decide(obs, phase, load(None, policy), needs, NEW)


TEN_OLD = tuple(vm(i) for i in range(10))


@pytest.mark.parametrize("name, obs, phase, policy, expect", [
    ("abort wins over everything", Observation(T0, (), "abort"), Phase("forward"), {}, Stop("abort")),
    ("rollback requested while going forward", Observation(T0, (), "rollback"), Phase("forward"), {},
     Stop("rollback")),
    ("someone changed the image", Observation(T0, TEN_OLD, model=model(ImageRef("p", "o", "s", "9.9.9"))),
     Phase("forward"), {}, ModelChanged),
    ("first batch: batches of 2, floor 8", Observation(T0, TEN_OLD, model=model()), Phase("forward"),
     {"batch_size": 2}, Start(("0", "1"), 8)),
    ("canary first", Observation(T0, TEN_OLD, model=model()), Phase("forward"), {"canary": 1, "batch_size": 3},
     Start(("0",), 7)),
    ("canary done: the next plain batch", Observation(T0, TEN_OLD, model=model()),
     Phase("forward", canary_done=True), {"canary": 1, "batch_size": 3}, Start(("0", "1", "2"), 7)),
    ("unhealthy first", Observation(T0, (*TEN_OLD[:9], vm(9, health="unhealthy")), model=model()),
     Phase("forward"), {"batch_size": 2, "prioritize_unhealthy": True}, Start(("9", "0"), 8)),
    ("the floor trims the batch", Observation(T0, (vm(0, health="unhealthy"), *TEN_OLD[1:]), model=model()),
     Phase("forward"), {"batch_size": 3}, Start(("0", "1", "2"), 7)),
    ("the model is still being updated", Observation(T0, TEN_OLD, model=model(state="Updating")),
     Phase("forward"), {}, Wait(MODEL_WAIT, "the model is being updated")),
    ("the next instances are busy", Observation(T0, (vm(0, prov="updating"), vm(1, prov="updating"),
                                                     *TEN_OLD[2:]), model=model()),
     Phase("forward"), {"batch_size": 2}, Wait(10.0, "the next instances are busy with another operation")),
    ("pause asked between batches", Observation(T0, TEN_OLD, "pause"), Phase("forward"), {}, Pause()),
    ("nothing left", Observation(T0, tuple(vm(i, NEW) for i in range(10)), model=model()), Phase("forward"), {},
     Finish("done")),
])
def test_between_batches(name, obs, phase, policy, expect):
    got = run(obs, phase, **policy)
    assert got == expect or (isinstance(expect, type) and isinstance(got, expect)), name


def test_the_floor_holds_the_next_batch_then_gives_up():
    down = (vm(0, health="unhealthy"), vm(1, health="unhealthy"), *TEN_OLD[2:])
    obs = Observation(T0, down, model=model())
    phase = Phase("forward", canary_done=True)
    first = run(obs, phase, batch_size=2, max_unavailable="2")
    assert first == Start(("0", "1"), 8)  # the unhealthy ones cost nothing
    done = Phase("forward", (batch(1, [0, 1], "succeeded", finished=T0 + 200),), True)
    # 0 and 1 came back unhealthy (allowed: max unhealthy upgraded 2): 8 healthy, floor 8, no margin left
    obs = Observation(T0 + 300, tuple(vm(i, NEW, "unhealthy") for i in range(2)) + TEN_OLD[2:], model=model())
    held = run(obs, done, batch_size=2, max_unavailable="2", max_unhealthy_upgraded="2")
    assert held == Wait(10.0, "the floor", floor_wait_since=T0 + 300)
    later = replace(done, floor_wait_since=T0 + 300)
    assert run(replace(obs, now=T0 + 300 + 601), later, batch_size=2, max_unavailable="2") == \
        Finish("only 8 serving instance(s) for 600s; starting the next batch would go below the floor of 8")


@pytest.mark.parametrize("name, verdicts, state, limit, expect", [
    ("all good", {"0": GOOD, "1": GOOD}, "issued", "0", Judge({})),
    ("one still initializing", {"0": GOOD, "1": WAIT}, "issued", "0", Wait),
    ("one unhealthy: judged at once", {"0": BAD, "1": WAIT}, "issued", "0", Judge),
    ("one unhealthy, one allowed: wait for the rest", {"0": BAD, "1": WAIT}, "issued", "1", Wait),
    ("one unhealthy, one allowed, rest done", {"0": BAD, "1": GOOD}, "issued", "1", Judge({"0": "x"})),
])
def test_a_batch_in_flight(name, verdicts, state, limit, expect):
    obs = Observation(T0 + 200, tuple(vm(i, NEW) for i in range(2)) + TEN_OLD[2:],
                      verdicts={k: Verdict(v, "x" if v == BAD else None) for k, v in verdicts.items()}, elapsed=200)
    got = run(obs, Phase("forward", (batch(1, [0, 1], state),)), max_unhealthy_upgraded=limit)
    if isinstance(expect, type):
        assert isinstance(got, expect), (name, got)
        if expect is Judge:
            assert got.failure and "instance 0: x" in got.failure
    else:
        assert got == expect, name


def test_resume_after_a_crash_while_issuing():
    """Killed between writing the batch and ARM accepting it: re-issue only what visibly never started."""
    obs = Observation(T0 + 5, (vm(0, NEW, prov="updating"), vm(1), *TEN_OLD[2:]),
                      verdicts={"0": Verdict(WAIT), "1": Verdict(WAIT)})
    assert run(obs, Phase("forward", (batch(1, [0, 1], "issuing"),))) == Reissue(("1",))
    both_started = replace(obs, instances=(vm(0, NEW, prov="updating"), vm(1, NEW, prov="updating"), *TEN_OLD[2:]))
    assert isinstance(run(both_started, Phase("forward", (batch(1, [0, 1], "issuing"),))), Wait)


def test_rollback_counts_its_own_phase():
    back = Phase("rollback", (replace(batch(1, [0, 1], "issued"), kind="rollback"),))
    obs = Observation(T0, tuple(vm(i, OLD) for i in range(10)), "rollback",
                      verdicts={"0": Verdict(GOOD), "1": Verdict(GOOD)})
    # a rollback request during the rollback is not a reason to stop it
    got = decide(obs, back, load(None, {}), lambda i: False, OLD)
    assert got == Judge({})


@pytest.mark.parametrize("vms, durations, elapsed, expect", [
    ([vm(0, NEW, "initializing", since=T0 + 120)], [], 130, 51.0),  # sleep through the grace period (+1 s)
    ([vm(0, NEW, prov="updating", health=None)], [], 40, 10.0),  # back off: every poll...
    ([vm(0, NEW, prov="updating", health=None)], [], 100, 25.0),  # ...at most a quarter of the time elapsed
    ([vm(0, NEW, prov="updating", health=None)], [200.0], 20, 160.0),  # measured: 90 % of the fastest batch
    ([vm(0, NEW, prov="updating", health=None)], [], 595, 5.0),  # never past the health timeout
])
def test_poll_delay(vms, durations, elapsed, expect):
    done = tuple(batch(n, [9], "succeeded", T0 - 1000, T0 - 1000 + d) for n, d in enumerate(durations, 2))
    phase = Phase("forward", (batch(1, [0]), *done))
    obs = Observation(T0 + elapsed, tuple(vms), elapsed=elapsed, health_grace=60.0)
    assert poll_delay(obs, phase, load(None, {})) == pytest.approx(expect)


@pytest.mark.parametrize("limit, failed, upgraded, too_many", [
    ("0", 1, 10, True), ("0", 0, 10, False), ("1", 1, 10, False), ("20%", 2, 10, False), ("20%", 3, 10, True),
    ("20%", 1, 4, True),
])
def test_too_many_failed(limit, failed, upgraded, too_many):
    policy = load(None, {"max_unhealthy_upgraded": limit})
    assert too_many_failed(policy, {str(i) for i in range(failed)}, {str(i) for i in range(upgraded)}) is too_many


# ------------------------------------------------------------------------------ surge
def sbatch(state: str, ids: list[int] = (), watermark: int = 9, surge: int = 2, base: int = 10) -> Batch:
    return replace(batch(1, list(ids), state), meta={"watermark": watermark, "surge": surge, "base": base})


def srun(obs: Observation, phase: Phase = FORWARD):
    return decide(obs, phase, load(None, {"strategy": "surge", "max_surge": "2"}), needs, NEW)


@pytest.mark.parametrize("name, obs, phase, expect", [
    ("first surge: ten old, add two", Observation(T0, TEN_OLD, model=model()), FORWARD,
     ScaleOut(12, {"watermark": 9, "surge": 2, "base": 10})),
    ("the scale-out never landed: ask again", Observation(T0, TEN_OLD), Phase("forward", (sbatch("issuing"),)),
     ScaleOut(12, {"watermark": 9, "surge": 2, "base": 10})),
    ("new VMs still coming up", Observation(T0, (*TEN_OLD, vm(10, NEW, None, "creating"),
                                                 vm(11, NEW, None, "creating")),
                                            verdicts={"10": Verdict(WAIT), "11": Verdict(WAIT)}),
     Phase("forward", (sbatch("issued"),)), Wait),
    ("new VMs good: retire two old ones", Observation(T0, (*TEN_OLD, vm(10, NEW), vm(11, NEW)),
                                                      verdicts={"10": Verdict(GOOD), "11": Verdict(GOOD)}),
     Phase("forward", (sbatch("issued"),)), Retire),
    ("a new VM failed: drop the surge", Observation(T0, (*TEN_OLD, vm(10, NEW, "unhealthy"), vm(11, NEW)),
                                                    verdicts={"10": Verdict(BAD, "x"), "11": Verdict(GOOD)}),
     Phase("forward", (sbatch("issued"),)), DropAdded),
    ("retiring: the delete landed, VMs going", Observation(T0, (*TEN_OLD[:8], vm(8, prov="deleting"),
                                                               vm(9, prov="deleting"), vm(10, NEW), vm(11, NEW))),
     Phase("forward", (sbatch("retiring", [8, 9]),)), Wait),
    ("retiring: the delete never landed (crash): again", Observation(T0, (*TEN_OLD, vm(10, NEW), vm(11, NEW))),
     Phase("forward", (sbatch("retiring", [8, 9]),)), Reissue),
    ("retiring: gone", Observation(T0, (*TEN_OLD[:8], vm(10, NEW), vm(11, NEW))),
     Phase("forward", (sbatch("retiring", [8, 9]),)), Judge({})),
    ("nothing old left", Observation(T0, tuple(vm(i, NEW) for i in range(10)), model=model()), FORWARD,
     Finish("done")),
])
def test_surge(name, obs, phase, expect):
    got = srun(obs, phase)
    if expect is Reissue:  # the retire is asked again (a Retire of what is still there)
        assert got == Retire(("8", "9")), name
    elif isinstance(expect, type):
        assert isinstance(got, expect), (name, got)
    else:
        assert got == expect, (name, got)
    if isinstance(got, Retire) and "good" in name:
        assert len(got.ids) == 2 and all(int(i) < 10 for i in got.ids)
    if isinstance(got, DropAdded):
        assert got.ids == ("10", "11") and "10" in got.bad


@pytest.mark.parametrize("name, settings, phase, expect", [
    ("a canary surges one VM first", {"canary": 1}, FORWARD, ScaleOut(11, {"watermark": 9, "surge": 1, "base": 10})),
    ("after the canary, the full surge", {"canary": 1}, Phase("forward", canary_done=True),
     ScaleOut(12, {"watermark": 9, "surge": 2, "base": 10})),
    ("named instances: only as many as are left of them", {"instances": ("3",)}, FORWARD,
     ScaleOut(11, {"watermark": 9, "surge": 1, "base": 10})),
])
def test_surge_canary_and_named_instances(name, settings, phase, expect):
    policy = load(None, {"strategy": "surge", "max_surge": "2", **settings})
    assert decide(Observation(T0, TEN_OLD, model=model()), phase, policy, needs, NEW) == expect, name


def test_surge_retires_only_named_instances():
    policy = load(None, {"strategy": "surge", "max_surge": "2", "instances": ("3", "7")})
    obs = Observation(T0, (*TEN_OLD, vm(10, NEW), vm(11, NEW)), verdicts={"10": Verdict(GOOD), "11": Verdict(GOOD)})
    got = decide(obs, Phase("forward", (sbatch("issued"),)), policy, needs, NEW)
    assert isinstance(got, Retire) and sorted(got.ids) == ["3", "7"]


# ------------------------------------------------------------------------------------ maintenance windows
MONDAY = 1_795_996_800.0  # 2026-11-30 00:00 UTC, a Monday


@pytest.mark.parametrize("windows, at, is_open, opens", [
    ((), MONDAY, True, MONDAY),
    (("Mon-Fri 22:00-06:00",), MONDAY + 3600, False, MONDAY + 22 * 3600),  # Monday 01:00: Sunday had no window
    (("Mon-Fri 22:00-06:00",), MONDAY + 86400 + 3600, True, MONDAY + 86400 + 3600),  # Tuesday 01:00: Monday's
    (("Mon-Fri 22:00-06:00",), MONDAY + 5 * 86400 + 7 * 3600, False, MONDAY + 7 * 86400 + 22 * 3600),  # Sat 07:00
    (("Sat,Sun 00:00-24:00", "daily 12:00-12:30"), MONDAY + 12 * 3600 + 60, True, MONDAY + 12 * 3600 + 60),
    (("daily 12:00-12:30",), MONDAY + 12 * 3600 + 1800, False, MONDAY + 86400 + 12 * 3600),  # end is open
])
def test_windows(windows, at, is_open, opens):
    from vmssctl.rollout import windows as w

    assert w.is_open(windows, at) is is_open and w.next_open(windows, at) == opens


@pytest.mark.parametrize("text", ["Mon-Fri", "Funday 01:00-02:00", "Mon 25:00-26:00", "Mon 01:60-02:00",
                                  "Mon 24:30-01:00", "x" * 200])
def test_bad_windows_are_one_clear_line(text):
    from vmssctl.errors import UsageError
    from vmssctl.rollout import windows as w

    with pytest.raises(UsageError, match="window"):
        w.parse(text)


def test_a_batch_waits_for_its_window_and_a_rollback_does_not():
    policy = load(None, {"batch_size": 2, "windows": ["daily 12:00-13:00"]})
    at = MONDAY + 3600
    got = decide(Observation(at, TEN_OLD, model=model()), FORWARD, policy, needs, NEW)
    assert isinstance(got, Wait) and got.seconds == 11 * 3600 and "window" in got.why
    assert isinstance(decide(Observation(MONDAY + 12 * 3600, TEN_OLD, model=model()), FORWARD, policy, needs, NEW),
                      Start)
    back = decide(Observation(at, TEN_OLD, model=model()), Phase("rollback"), policy, needs, NEW)
    assert isinstance(back, Start)


def soaked_batch(meta: dict) -> Batch:
    b = batch(1, [0, 1], "succeeded", finished=T0)
    return replace(b, meta=meta)


@pytest.mark.parametrize("name, now, meta, health, limit, expect", [
    ("soaking: wait out what is left", T0 + 10, {"soak": 60}, "healthy", "0", Wait(50.0, "soaking")),
    ("soak over, all still healthy", T0 + 60, {"soak": 60}, "healthy", "0", Soaked(())),
    ("soak over, an upgraded one went bad", T0 + 61, {"soak": 60}, "unhealthy", "0", Soaked),
    ("...and one bad is allowed", T0 + 61, {"soak": 60}, "unhealthy", "1", Soaked(("0",), None)),
    ("soaked already: the next batch", T0 + 61, {"soak": 60, "soaked": True, "soured": []}, "healthy", "0", Start),
    ("no soak was due (nothing left then)", T0 + 1, {}, "healthy", "0", Start),
])
def test_soak_after_a_batch_is_phase_state(name, now, meta, health, limit, expect):
    """--pause: after a batch the next turns wait until its soak is over, then see which upgraded instances went
    unhealthy meanwhile (recorded with the batch: a rollout resumed mid-soak waits only what is left)."""
    obs = Observation(now, (vm(0, NEW, health), vm(1, NEW), *TEN_OLD[2:]), model=model())
    got = run(obs, Phase("forward", (soaked_batch(meta),), True), batch_size=2, pause="60s",
              max_unhealthy_upgraded=limit)
    if isinstance(expect, type):
        assert isinstance(got, expect), (name, got)
    else:
        assert got == expect, (name, got)
    if name == "soak over, an upgraded one went bad":
        assert got.failure and "instance 0: unhealthy after the 60s soak" in got.failure


def test_a_judged_batch_soaks_only_when_work_is_left_and_a_pause_is_a_turn_on_the_clock():
    good = {"0": Verdict(GOOD), "1": Verdict(GOOD)}
    obs = Observation(T0 + 200, tuple(vm(i, NEW) for i in range(2)) + TEN_OLD[2:], verdicts=good, elapsed=200)
    assert run(obs, Phase("forward", (batch(1, [0, 1]),)), pause="90s").soak == 90.0
    last = Observation(T0 + 200, tuple(vm(i, NEW) for i in range(10)), verdicts=good, elapsed=200)
    assert run(last, Phase("forward", (batch(1, [0, 1]),)), pause="90s").soak == 0.0
    assert run(Observation(T0, (), "pause"), FORWARD, poll="30s") == Pause() and \
        run(Observation(T0, (), "pause"), FORWARD, poll="30s").seconds == 5.0
