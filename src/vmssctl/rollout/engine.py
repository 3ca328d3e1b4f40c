"""The level-triggered rollout loop: each turn observes ARM, decides, acts once, and records.

Observe (``_observe_turn``) is the only place a turn reads ARM: the instances, the open batch's
verdicts (ARM's view, then the policy's gates) and the model when it matters. ``decide`` (a pure
function in ``decide.py``) picks the one next action from that observation and what the journal
says of this phase; act carries it out (ARM calls, journal, events). Nothing here trusts memory
over ARM: the journal only supplies intent (target, previous image, policy, which batch was being
issued), so resuming after a crash is just running the loop again.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from vmssctl.errors import ArmError, Conflict, NotFound, PreconditionFailed, UsageError
from vmssctl.gateway import Gateway
from vmssctl.model import ImageRef, Instance, ScaleSet, id_key
from vmssctl.plan import Plan
from vmssctl.policy import RolloutPolicy
from vmssctl.rollout import claim, progress
from vmssctl.rollout.clock import Clock
from vmssctl.rollout.decide import decide, remaining
from vmssctl.rollout.events import Sink, Snapshot
from vmssctl.rollout.gates import BAD, GOOD, Context, Gate, Verdict, combine, judge
from vmssctl.rollout.journal import Batch, Journal, Rollout
from vmssctl.rollout.progress import Progress, sample
from vmssctl.rollout.strategies import Strategy, for_phase, of_policy
from vmssctl.rollout.turn import (
    MODEL_WAIT,
    Adopt,
    CancelUpgrade,
    DropAdded,
    Effect,
    Finish,
    Judge,
    ModelChanged,
    Needs,
    Observation,
    Pause,
    Phase,
    Reissue,
    Retire,
    ScaleOut,
    Sight,
    Soaked,
    Start,
    Stop,
    Wait,
    describe,
    protected,
    window_start,
)
from vmssctl.target import behind, diff, runs_image, same_image, wants_latest

T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_ABORTED = 0, 1, 3
TAG = "vmssctl-rollout"
SUMMARY_WORTH_IT = 100  # a listing of up to this many instances is one page: no cheaper than the summary
IMAGE_POLL = 60.0  # how often --wait-for-image asks again whether the image has reached the set's region
SLEEP_SLICE = 30.0  # longest uninterrupted wait: requests (abort, rollback) are seen at least this often
REQUESTED = "rollback requested"  # a rollback the user asked for ends with exit 0, not as a failure


class Halt(Exception):
    """Stop the rollout without touching anything more (e.g. someone else edited the model)."""


class Engine:
    def __init__(self, api: Gateway, journal: Journal, rollout: Rollout, clock: Clock,
                 sinks: list[Sink], gates: list[Gate] | None = None) -> None:
        self.api = api
        self.journal = journal
        self.r = rollout
        self.clock = clock
        self.sinks = sinks
        self.policy = RolloutPolicy.from_json(rollout.policy)
        self.target = ImageRef(**rollout.target)
        self.previous = ImageRef(**rollout.previous)
        self.gates = gates or []  # built by the composition root (upgrade.run), with what they need
        self.figures: dict[int, list[Mapping[str, Any]]] = {}  # batch -> what its gates last measured
        self.simulated = bool(getattr(clock, "simulated", False))
        events = journal.events(rollout.id)
        self.fresh = not events
        self.t0 = events[0]["time"] if events else clock.now()
        self.interrupted = sum(float(e.get("interrupted") or 0) for e in events if e["type"] == "rollout_resumed")
        self.last: Progress | None = Progress.from_json(rollout.progress) if rollout.progress else None
        self.history = self.last.history if self.last else ()
        counted = [e for e in events if e["type"] == "measured" and e.get("gate") == "requests"]
        self.requests: tuple[int, int] | None = (sum(int(e["requests"]) for e in counted),
                                                  sum(int(e["failed"]) for e in counted)) if counted else None
        self.instances: list[Instance] = []
        self.scale_set: ScaleSet | None = None
        self.newest: str | None = None  # with a 'latest' target: the version that means today
        self._state = rollout.state  # the rollout's state as the latest turn read it
        self.arm_seconds = 0.0  # clock time spent inside ARM calls (the SDK's retries included)
        self._arm_mark: dict[int, float] = {}  # batch seq -> arm_seconds when it was first seen
        self.held: claim.Claim | None = None  # this process's claim on the set while it runs

    # ------------------------------------------------------------------ output
    def emit(self, kind: str, **data: Any) -> None:
        if self.simulated:
            data["simulated"] = True  # its times are the emulator's simulated seconds
        event = {"type": kind, "rollout": self.r.id, "time": self.clock.now(), **data}
        self.journal.add_event(self.r.id, event["time"], kind, {k: v for k, v in data.items()})
        for sink in self.sinks:
            sink.event(event)

    def _report(self, kind: str, plan: Plan, started: int, done: int, open_batch: Batch | None,
                durations: list[float], strategy: Strategy) -> None:
        """Compute this turn's Progress (the one every view renders), store it, and hand it to the sinks."""
        now = self.clock.now()
        healthy = sum(1 for i in self.instances if i.healthy)
        self.history = sample(self.history, now, healthy)
        in_flight = strategy.replacing(open_batch) if open_batch else 0
        p = Progress(
            rollout_id=self.r.id, scale_set=f"{self.api.resource_group}/{self.api.name}", phase=kind,
            state=self._state, target=str(self.previous if kind == "rollback" else self.target),
            batch_no=started, batches_total=started + len(plan.batches), done=done,
            total=done + in_flight + plan.pending, healthy=healthy, capacity=len(self.instances), floor=plan.floor,
            elapsed=self._elapsed(), now=now, simulated=self.simulated,
            eta=progress.eta(durations, self._batch_elapsed(open_batch) if open_batch else None, len(plan.batches),
                             self.policy.pause, self.policy.poll),
            current=tuple(open_batch.instance_ids or strategy.watched(open_batch, self.instances)) if open_batch
            else (), history=self.history,  # (what a strategy watches until the batch names its instances)
            requests=self.requests)
        self.last = p
        self.journal.observed(self.r.id, now, p.to_json())
        snap = Snapshot(p, self.instances, self.scale_set.fault_domains if self.scale_set else 5)
        for sink in self.sinks:
            sink.snapshot(snap)

    def _elapsed(self) -> float:
        """Active time of the rollout: from its first event, less the time no process was running it."""
        return max(0.0, self.clock.now() - self.t0 - self.interrupted)

    def _final(self) -> None:
        """Store the last Progress with the rollout's final state, so every view ends on the same figures."""
        if self.last is not None:
            p = replace(self.last, state=self.journal.get(self.r.id).state, eta=0.0, elapsed=self._elapsed(),
                        now=self.clock.now(), current=())
            self.journal.observed(self.r.id, p.now, p.to_json())

    # ------------------------------------------------------------------ ARM
    def _arm(self, call: Callable[[], T]) -> T:
        """Make an ARM call, counting the clock time it takes: time the SDK spends retrying a throttled or
        failing ARM is not time a VM had to become healthy, so it is not charged to the health timeout."""
        t0 = self.clock.now()
        try:
            return call()
        finally:
            self.arm_seconds += max(0.0, self.clock.now() - t0)

    def _observe_set(self) -> ScaleSet:
        self.scale_set = self._arm(self.api.get)
        return self.scale_set

    def _observe(self) -> dict[str, Instance]:
        self.instances = self._arm(self.api.instances)
        return {i.instance_id: i for i in self.instances}

    def _batch_elapsed(self, batch: Batch) -> float:
        """How long the batch's VMs have had, less time spent waiting on ARM itself."""
        mark = self._arm_mark.setdefault(batch.seq, self.arm_seconds)
        return self.clock.now() - (batch.started or self.clock.now()) - (self.arm_seconds - mark)

    def _ensure_model(self, image: ImageRef, expected_from: ImageRef) -> None:
        """Put ``image`` in the model, with If-Match; refuse if someone else changed it meanwhile. A strategy that
        leaves this set's model alone (the image goes to another set) only has the set tagged as this rollout's."""
        if not of_policy(self.policy).changes_model:
            ss = self._observe_set()
            self._check_claim(ss)
            if image == self.target:  # (the image goes to another set of the same region)
                self._await_image(image, ss.location)
            if ss.tags.get(TAG) != self.r.id:
                self._set_tag(ss, self.r.id)
            return
        while True:
            ss = self._observe_set()
            self._check_claim(ss)
            if same_image(ss.image, image):
                if ss.tags.get(TAG) != self.r.id:
                    self._set_tag(ss, self.r.id)
                    continue
                if ss.provisioning_state.lower() in ("updating", "creating"):
                    self._sleep(MODEL_WAIT)
                    continue
                return
            if not same_image(ss.image, expected_from):
                raise Halt(f"the scale set's image changed outside this rollout (now {ss.image}, expected "
                           f"{expected_from}); nothing was overwritten")
            if image == self.target:
                self._await_image(image, ss.location)
            self._hold()
            tags = {**ss.tags, TAG: self.r.id}
            try:
                self.api.update(ss.etag, image=image, tags=tags)
            except PreconditionFailed:
                raise Halt("the scale set changed while vmssctl was updating it (etag mismatch, HTTP 412); "
                           "nothing was overwritten: check the model and run again") from None
            self.emit("model_updated", diff=diff(ss.image, image))

    def _check_claim(self, ss: ScaleSet) -> None:
        """The ``vmssctl-rollout`` tag is the claim on the scale set, taken by a write conditional on the etag
        just read (so of two rollouts racing for it exactly one gets it) and checked on every read of the model.
        Another rollout's tag is only replaced when this journal knows that rollout has ended."""
        holder = ss.tags.get(TAG)
        if not holder or holder == self.r.id:
            return
        try:
            other = self.journal.get(holder)
        except UsageError:
            other = None
        if other is None or other.active:
            raise Halt(f"another vmssctl rollout ({holder}) holds this scale set (tag {TAG}={holder}); nothing was "
                       "changed by this one")

    def _set_tag(self, ss: ScaleSet, value: str | None) -> None:
        tags = {k: v for k, v in ss.tags.items() if k != TAG}
        if value:
            tags[TAG] = value
        try:
            self.api.update(ss.etag, tags=tags)
        except PreconditionFailed:
            raise Halt("the scale set changed while vmssctl was tagging it (HTTP 412); nothing was "
                       "overwritten") from None

    def _await_image(self, image: ImageRef, location: str) -> None:
        """``--wait-for-image``: before the model names it, wait (within the limit) until the image can be used in
        the set's region, a gallery version replicated there; what cannot become available stops the rollout
        with nothing changed."""
        if self.policy.wait_for_image <= 0:
            return
        deadline, said = self.clock.now() + self.policy.wait_for_image, False
        while True:
            seen = self._arm(lambda: self.api.image_availability(location, image))
            if seen is None or seen.ready:
                return
            if not seen.pending or self.clock.now() >= deadline:
                raise Halt(f"{seen.said}" + (f" after waiting {self.policy.wait_for_image:.0f}s" if seen.pending
                                            else "") + "; nothing was changed")
            if not said:
                self.emit("waiting", why=f"the image to be replicated to {location}",
                          seconds=round(deadline - self.clock.now()))
                said = True
            self._sleep(min(IMAGE_POLL, deadline - self.clock.now()))

    def _release_tag(self) -> None:
        try:
            ss = self._observe_set()
            if ss.tags.get(TAG) == self.r.id:
                self._set_tag(ss, None)
        except (ArmError, Halt):
            pass  # the tag is advisory; a stale one names a finished rollout and is reported as such

    # ------------------------------------------------------------------ control
    def _sleep(self, seconds: float) -> None:
        """Wait in slices, leaving early if asked to abort or roll back."""
        end = self.clock.now() + seconds
        while True:
            left = end - self.clock.now()
            if left <= 0:
                return
            self.clock.sleep(min(left, SLEEP_SLICE))
            if left > SLEEP_SLICE and self._requested() in ("abort", "rollback"):
                return

    def _requested(self) -> str | None:
        return self.journal.get(self.r.id).requested

    def _paused(self, seconds: float) -> None:
        """Asked to pause between batches: say so once (the journal's state, an event, the progress every view
        shows), then let the clock pass until the next turn looks again (resume, abort or rollback)."""
        if self._state != "paused":
            self.journal.update(self.r.id, state="paused")
            self._state = "paused"
            self.emit("paused")
            if self.last is not None:
                self.last = replace(self.last, state="paused", eta=None, elapsed=self._elapsed(),
                                    now=self.clock.now())
                self.journal.observed(self.r.id, self.last.now, self.last.to_json())
                snap = Snapshot(self.last, self.instances, self.scale_set.fault_domains if self.scale_set else 5)
                for sink in self.sinks:
                    sink.snapshot(snap)
        self.clock.sleep(seconds)

    def _resumed(self) -> None:
        """A paused rollout asked to resume: running again (or rolling back, if that is the phase it paused in)."""
        self.journal.unpause(self.r)
        self._state = "rolling_back" if self.r.phase == "rollback" else "running"
        self.emit("resumed")

    # ------------------------------------------------------------------ main
    def run(self) -> int:
        self.held = claim.take(self.journal, self.r.scale_set, self.r.id)
        lost = False
        try:
            self._begun()
            return self._run()
        except Halt as e:
            self.journal.update(self.r.id, state="failed", error=str(e))
            self.emit("rollout_failed", error=str(e))
            return EXIT_FAILED
        except claim.ClaimLost:
            lost = True  # another process drives the rollout now: nothing more is written by this one
            raise
        finally:
            try:
                if not lost:
                    self._final()
            finally:
                self.held.release()

    def _hold(self) -> None:
        """Make sure this process still holds the set (every turn, and before it writes to ARM): ClaimLost ends it
        at once when another took it meanwhile."""
        if self.held is not None:
            self.held.check()

    def _begun(self) -> None:
        """Record the start, or a resume: the time nobody ran the rollout is an interruption, left out of its
        elapsed time and of the batch in flight (whose health timeout starts again)."""
        if self.fresh:
            self.emit("rollout_started", scaleSet=f"{self.api.resource_group}/{self.api.name}",
                      **{"from": str(self.previous), "to": str(self.target)})
            return
        gap = self.clock.now() - self.r.seen if self.r.seen is not None else 0.0
        gap = max(0.0, gap)
        self.interrupted += gap
        self.emit("rollout_resumed", phase=self.r.phase, interrupted=round(gap, 1))
        for b in self.journal.batches(self.r.id):
            if b.state in ("issuing", "issued", "retiring") and b.started is not None and gap:
                self.journal.set_batch(b, started=b.started + gap)

    def _run(self) -> int:
        if self.r.state == "rolling_back" or self.r.phase == "rollback" or self._requested() == "rollback":
            return self._rollback(self.r.error or REQUESTED)
        if self.r.state == "paused":
            self.journal.update(self.r.id, state="running")
        self._await_settled(self.target)
        self._ensure_model(self.target, self.previous)
        self.journal.update(self.r.id, phase="forward")
        if wants_latest(self.target) and self.scale_set is not None:
            self.newest = self.api.newest_version(self.scale_set.location, self.target)
        # behind the model, or on the latest model but not on the target image (the model moved under us)
        outcome = self._drive("forward", lambda i: not protected(i, self.policy) and (
            behind(i.latest_model, i.image, self.newest) or not runs_image(i.image, self.target)))
        if outcome == "done":
            self._release_tag()
            upgraded = sum(len(b.instance_ids) for b in self.journal.batches(self.r.id) if b.kind == "forward")
            self.journal.update(self.r.id, state="succeeded")
            self.emit("rollout_succeeded", upgraded=upgraded, seconds=self._elapsed())
            return EXIT_OK
        self._halt(outcome)
        if outcome == "abort":
            return self._aborted()
        if outcome == "rollback":
            return self._rollback(REQUESTED)
        if self.policy.rollback == "auto":
            return self._rollback(outcome)
        self._release_tag()
        self.journal.update(self.r.id, state="failed", error=outcome)
        self.emit("rollout_failed", error=outcome)
        return EXIT_FAILED

    def _halt(self, why: str, effects_only: bool = False) -> None:
        """The phase stops early (a failure, an abort, a rollback): carry out what the strategy says to undo
        first (on a Rolling set, cancel Azure's rolling upgrade in progress: the instances it is upgrading
        finish; no new batch starts)."""
        for effect in of_policy(self.policy).on_halt():
            if isinstance(effect, Effect):  # a strategy's own undoing (readmit what it drained, say)
                kind = "rollback" if self.r.phase == "rollback" else "forward"  # (a new rollout's is "model")
                effect.apply(_Host(self, self.target), self._phase(kind))
            elif isinstance(effect, CancelUpgrade) and not effects_only:
                status = self._arm(self.api.rolling_status)
                if status is not None and status.running:
                    try:
                        self._arm(self.api.cancel_rolling)
                    except Conflict:
                        continue  # it ended meanwhile
                    self.emit(effect.event, reason=why)

    def _aborted(self) -> int:
        self._release_tag()
        self.journal.update(self.r.id, state="aborted", requested=None)
        self.emit("rollout_aborted")
        return EXIT_ABORTED

    def _rollback(self, reason: str) -> int:
        self.journal.update(self.r.id, state="rolling_back", phase="rollback", error=reason, requested=None)
        self.r.phase = "rollback"
        self.emit("rollback_started", to=str(self.previous), reason=reason)
        self._halt(reason)  # (resumed straight into a rollback: Azure may still be rolling forward)
        self._await_settled(self.previous)
        self._ensure_model(self.previous, self.target)
        touched = {i for b in self.journal.batches(self.r.id) if b.kind == "forward" for i in b.instance_ids}
        def back(i: Instance) -> bool:
            if protected(i, self.policy):
                return False
            if not i.latest_model:
                return i.instance_id in touched or not runs_image(i.image, self.previous)
            return i.instance_id in touched and not runs_image(i.image, self.previous)

        outcome = self._drive("rollback", back)
        self._release_tag()
        if outcome == "abort":
            return self._aborted()
        if outcome in ("done", "rollback"):
            self.journal.update(self.r.id, state="rolled_back")
            self.emit("rollout_rolled_back", error=reason)
            return EXIT_OK if reason == REQUESTED else EXIT_FAILED
        else:
            self.journal.update(self.r.id, state="failed", error=f"{reason}; rollback failed: {outcome}")
            self.emit("rollout_failed", error=f"{reason}; rollback failed: {outcome}")
        return EXIT_FAILED

    def _await_settled(self, image: ImageRef) -> None:
        """Before putting ``image`` in the model of a set that Azure upgrades itself: wait until no instance is in
        flight, for at most the health timeout (an upgrade Azure cancelled, this rollout's or another's, lets its
        instances finish on the image they were moving to). Were the model changed first, Azure's upgrade would
        start beside them, and the first batch watched would take them for its own, then wait for them to reach an
        image they are not moving to: a rollback failed so, and so did a rollout started just after an abort. The
        model already on ``image`` (a run resumed), there is nothing to wait for. (The set is read only when some
        instance is in flight: ``_ensure_model`` reads it next anyway.)"""
        if not of_policy(self.policy).reads_rolling:
            return
        busy = self._arm(self.api.busy_count)
        if not busy or same_image(self._observe_set().image, image):
            return
        deadline = self.clock.now() + self.policy.health_timeout
        self.emit("waiting", why=f"{busy} instance(s) in flight finish first (Azure lets those of an upgrade it "
                  "cancelled finish)", seconds=round(self.policy.health_timeout))
        while busy and self.clock.now() < deadline:
            self._sleep(min(self.policy.poll, deadline - self.clock.now()))
            busy = self._arm(self.api.busy_count)

    def _drive(self, kind: str, needs: Needs) -> str:
        """Turns of observe → decide → act until the phase ends: 'done', 'abort', 'rollback' or a failure reason.
        The actions are generic effects; which strategy chose them is not the engine's business."""
        wanted = self.target if kind == "forward" else self.previous
        floor_since: float | None = None
        announced: str | None = None  # the announced wait going on (said once)
        while True:
            self._hold()
            phase = self._phase(kind, floor_since)
            strategy = for_phase(self.policy, phase)
            obs = self._observe_turn(phase, needs, strategy)
            plan = remaining(obs, phase, self.policy, needs)
            if obs.instances:
                self._report(kind, plan, len(phase.batches), len(phase.upgraded), phase.open_batch, phase.durations,
                             strategy)
            action = decide(obs, phase, self.policy, needs, wanted, plan)
            batch = phase.open_batch
            if not isinstance(action, Wait) or action.floor_wait_since is None:
                floor_since = None
            if isinstance(action, Stop):
                return action.what
            if isinstance(action, ModelChanged):  # touch nothing more, but undo what the strategy did (readmit)
                self._halt(action.reason, effects_only=True)
                raise Halt(action.reason)
            if isinstance(action, Finish):
                return action.outcome
            if isinstance(action, Pause):
                self._paused(action.seconds)
            elif isinstance(action, Wait):
                if action.floor_wait_since is not None and floor_since is None and action.by_floor:
                    self.emit("waiting_for_floor", healthy=obs.healthy, floor=plan.floor)
                if action.announce and action.why != announced:  # a long wait is said once, when it begins
                    self.emit("waiting", why=action.why, seconds=round(action.seconds))
                announced = action.why if action.announce else None
                floor_since = action.floor_wait_since
                if batch is not None and batch.state == "issuing":
                    self.journal.set_batch(batch, state="issued")  # nothing left that never started
                self._sleep(action.seconds)
                if batch is not None:
                    self._wait_provisioned(batch, obs.by_id, strategy.watched(batch, obs.instances))
            elif isinstance(action, Reissue):
                assert batch is not None
                self.emit("batch_reissued", batch=phase.batches.index(batch) + 1, phase=kind,
                          instances=list(action.ids))
                self._issue(batch, list(action.ids))
            elif isinstance(action, Judge):
                assert batch is not None
                if action.failure is not None:
                    self._judged(phase, batch, action)
                    return action.failure
                self._judged(phase, batch, action)
            elif isinstance(action, Soaked):
                last = phase.batches[-1]
                self.journal.set_batch(last, meta={**last.meta, "soaked": True, "soured": list(action.soured)})
                if action.soured:
                    self.emit("soak_failed", instances=list(action.soured))
                if action.failure is not None:
                    return action.failure
            elif isinstance(action, Start):
                self._start(phase, action, obs)
            elif isinstance(action, Adopt):  # the platform's own upgrade started these: judged as a batch of ours
                adopted = self.journal.add_batch(self.r.id, kind, list(action.ids), self.clock.now(),
                                                 {"base": action.base})
                self.journal.set_batch(adopted, state="issued")
                self.emit("batch_started", batch=len(phase.batches) + 1, phase=kind, instances=list(action.ids),
                          floor=plan.floor, healthy=obs.healthy, by="azure")
            elif isinstance(action, ScaleOut):
                refused = self._scale_out(phase, action, obs)
                if refused is not None:
                    return refused
            elif isinstance(action, Retire):
                assert batch is not None
                meta = dict(batch.meta)
                if batch.state != "retiring":  # how long the new VMs took to be good: spaces the next batch's polls
                    meta["ready_after"] = round(self.clock.now() - (batch.started or self.clock.now()), 1)
                self.journal.set_batch(batch, instance_ids=list(action.ids), state="retiring", meta=meta)  # intent
                self.emit("retiring", batch=phase.batches.index(batch) + 1, phase=kind, instances=list(action.ids))
                if action.ids:
                    self._hold()
                    self._arm(functools.partial(self.api.delete, list(action.ids)))
            elif isinstance(action, DropAdded):
                assert batch is not None
                self.journal.set_batch(batch, state="failed", finished=self.clock.now(), failed=sorted(action.bad))
                self.emit("batch_failed", batch=phase.batches.index(batch) + 1, phase=kind,
                          reasons=describe(action.bad), instances=sorted(action.bad, key=id_key),
                          removing=list(action.ids))
                if action.ids:
                    self._hold()
                    self._arm(functools.partial(self.api.delete, list(action.ids)))
                return action.failure
            elif isinstance(action, Effect):  # a strategy's own: it writes through the host, intent first
                outcome = action.apply(_Host(self, wanted), phase)
                if outcome is not None:
                    return outcome

    def _phase(self, kind: str, floor_since: float | None = None) -> Phase:
        """The phase as the journal records it (a rollback sees what the forward phase did, to undo it)."""
        every = self.journal.batches(self.r.id)
        batches = tuple(b for b in every if b.kind == kind)
        soured = frozenset(i for b in batches for i in b.meta.get("soured", []))
        forward = tuple(b for b in every if b.kind == "forward") if kind == "rollback" else ()
        return Phase(kind, batches, self.r.canary_done, floor_since, soured, forward)

    def _observe_turn(self, phase: Phase, needs: Needs, strategy: Strategy) -> Observation:
        """The one place a turn reads: what was requested, the instances, the open batch's verdicts (ARM's view
        and the gates, on the instances the strategy judges), the model when a batch may start or upgraded VMs
        look off the model, and the platform's own upgrade when the strategy follows it. A paused rollout with
        no batch in flight reads nothing of ARM."""
        row = self.journal.get(self.r.id)  # one read a turn: what was requested, and the state for the report
        self._state, requested = row.state, row.requested
        if row.state == "paused" and requested == "resume":
            self._resumed()
            requested = None
        if requested == "abort" or (requested == "rollback" and phase.kind == "forward"):
            return Observation(self.clock.now(), (), requested)
        if requested == "pause" and phase.open_batch is None:
            return Observation(self.clock.now(), (), requested)
        by_id = self._observe()
        batch, elapsed, model = phase.open_batch, 0.0, None
        verdicts: dict[str, Verdict] = {}
        elsewhere: tuple[Instance, ...] | None = None
        if batch is not None:
            elapsed = self._batch_elapsed(batch)
            where = strategy.elsewhere(batch)
            if where is not None:  # the batch's instances are on another set (blue/green's new one)
                try:
                    elsewhere = tuple(self._arm(self.api.for_set(where).instances))
                except NotFound:
                    elsewhere = None
            pool = list(elsewhere) if elsewhere is not None else self.instances
            judged = strategy.judged(batch, pool) if where is None or elsewhere is not None else None
            if judged is not None:
                verdicts, off_model = self._verdicts(batch, judged, {i.instance_id: i for i in pool} if where
                                                     else by_id, needs, elapsed, window_start(phase, batch), where)
                if off_model and where is None:
                    model = self._observe_set()
        elif requested != "pause":
            model = self._observe_set()
        if model is not None:
            self._check_claim(model)
        rolling = self._arm(self.api.rolling_status) if strategy.reads_rolling else None
        settled = all(v.state in (GOOD, BAD) for v in verdicts.values()) if batch is not None and verdicts else \
            batch is None
        sight = Sight(model or self.scale_set, settled, elsewhere)
        seen = self._arm(lambda: strategy.observe(self.api, phase, self.policy, sight))
        return Observation(self.clock.now(), tuple(self.instances), requested, verdicts, elapsed, model,
                           self.scale_set.health_grace if self.scale_set else None, rolling, seen)

    def _verdicts(self, batch: Batch, judged: list[str], by_id: dict[str, Instance], needs: Needs,
                  elapsed: float, since: float | None = None, where: str | None = None) -> tuple[dict[str, Verdict],
                                                                                                 bool]:
        """Each instance of the batch: ARM's view, then (forward only) the policy's gates; and whether some
        upgraded VM sits idle off the model (someone may have changed it). ``where``: the set they are on, when
        not the rollout's."""
        timeout = self.policy.health_timeout
        verdicts, off_model = {}, False
        for iid in judged:
            inst = by_id.get(iid)
            if inst is None:
                continue  # scaled in meanwhile (autoscale): nothing left to judge
            verdicts[iid] = judge(inst, not needs(inst), elapsed, timeout)
            if verdicts[iid].state != GOOD and batch.state == "issued":
                off_model |= needs(inst) and inst.provisioning == "succeeded" and inst.power == "running"
        ready = [by_id[i] for i, v in verdicts.items() if v.state == GOOD]
        # ARM says good: now the policy's gates (probe, hook, Prometheus, web). Not when rolling back: that restores
        # the image that was serving, and metrics of the bad one would only hold it up (as Argo skips analysis).
        if ready and self.gates and batch.kind == "forward":
            ctx = Context(self.api.resource_group, where or self.api.name, batch.seq, self.clock.now(), since)
            answers = [gate.check(ctx, ready) for gate in self.gates]
            # what the gates measured (users' requests, say), recorded when the batch is judged
            self.figures[batch.seq] = [f for a in answers
                                       for f in [next((v.figure for v in a.values() if v.figure), None)] if f]
            for inst in ready:
                verdicts[inst.instance_id] = combine([a[inst.instance_id] for a in answers if inst.instance_id in a],
                                                     elapsed >= timeout, timeout)
        return verdicts, off_model

    def _judged(self, phase: Phase, batch: Batch, action: Judge) -> None:
        """Record a settled batch (and, when it soaks, for how long: the soak is phase state the next turns wait
        out)."""
        no, kind = phase.batches.index(batch) + 1, phase.kind
        now = self.clock.now()
        for figure in self.figures.pop(batch.seq, []):
            self.emit("measured", batch=no, phase=kind, **figure)
            if figure.get("gate") == "requests":  # users' requests so far: part of the progress every view shows
                was = self.requests or (0, 0)
                self.requests = (was[0] + int(figure["requests"]), was[1] + int(figure["failed"]))
        meta = {**batch.meta, "soak": action.soak} if action.soak and action.failure is None else batch.meta
        if action.bad:
            self.journal.set_batch(batch, state="failed", finished=now, failed=sorted(action.bad), meta=meta)
            self.emit("batch_failed", batch=no, phase=kind, reasons=describe(action.bad),
                      instances=sorted(action.bad, key=id_key))
        else:
            self.journal.set_batch(batch, state="succeeded", finished=now, meta=meta)
            self.emit("batch_succeeded", batch=no, phase=kind, seconds=now - (batch.started or now))
        if action.soak and action.failure is None:
            self.emit("soak", seconds=action.soak)

    def _scale_out(self, phase: Phase, action: ScaleOut, obs: Observation) -> str | None:
        """Record the batch (intent first: its meta says how to tell the VMs it adds), then raise the capacity. When
        ARM refuses (quota, SKU not available, allocation, the 1,000-VM limit): stop with its reason, or go on
        with the policy the action falls back to. Returns a failure, or None."""
        batch = phase.open_batch
        if batch is None:
            batch = self.journal.add_batch(self.r.id, phase.kind, [], self.clock.now(), dict(action.meta))
            self.emit("batch_started", batch=len(phase.batches) + 1, phase=phase.kind, instances=[],
                      adding=action.adding, floor=action.floor, healthy=obs.healthy)
        try:
            self._hold()
            issued_at = self.clock.now()  # the new VMs' time starts now (see _issue)
            self._arm(lambda: self.api.set_capacity(action.capacity))
        except ArmError as e:
            if e.status not in (400, 403, 409) and e.code not in ("SkuNotAvailable", "AllocationFailed"):
                raise
            self.journal.set_batch(batch, state="failed", finished=self.clock.now())
            if action.fallback is None:
                self.emit(action.refused, reason=str(e), fallback=None)
                return f"ARM refused {action.label} to {action.capacity}: {e}"
            self.policy = action.fallback
            self.journal.update(self.r.id, policy=json.dumps(self.policy.to_json()))
            self.emit(action.refused, reason=str(e), fallback=action.fallback.strategy)
            return None
        self.journal.set_batch(batch, state="issued", started=issued_at)
        self._canary_started(phase.kind)
        self._sleep(action.settle)  # nothing to see until the new VMs can be up
        return None

    def _start(self, phase: Phase, action: Start, obs: Observation) -> None:
        """Open the next batch in the journal (intent first), then issue it."""
        kind, ids = phase.kind, list(action.ids)
        batch = self.journal.add_batch(self.r.id, kind, ids, self.clock.now(), dict(action.meta))
        self._canary_started(kind)
        self.emit("batch_started", batch=len(phase.batches) + 1, phase=kind, instances=ids, floor=action.floor,
                  healthy=obs.healthy)
        if not action.issue:
            return  # the strategy issues it when what comes first is done
        self._issue(batch, ids)
        # the batch's VMs stop serving now; the next observation is a while off (polls are sparse)
        by_id = obs.by_id
        self.history = sample(self.history, self.clock.now(), obs.healthy - sum(1 for i in ids if by_id[i].healthy))
        self._sleep(action.settle)  # nothing to see the moment it starts

    def _canary_started(self, kind: str) -> None:
        """The first forward batch is the canary (when there is one): later batches take the full size."""
        if kind == "forward" and self.policy.canary and not self.r.canary_done:
            self.journal.update(self.r.id, canary_done=1)
            self.r.canary_done = True

    def _wait_provisioned(self, batch: Batch, by_id: dict[str, Instance], ids: list[str]) -> None:
        """While the batch's VMs (``ids``) are still being rebuilt, created or deleted, poll the set's instance-view
        summary (one request) rather than listing every instance; list again once nothing of ours is in flight."""
        busy = ("updating", "creating", "deleting")
        ours = {i for i in ids if i in by_id and by_id[i].provisioning in busy}
        if not ours or len(by_id) <= SUMMARY_WORTH_IT:
            return
        others = sum(1 for iid, i in by_id.items() if iid not in ours and i.provisioning in busy)
        deadline = (batch.started or self.clock.now()) + self.policy.health_timeout
        while self.clock.now() < deadline and self._requested() not in ("abort", "rollback", "pause"):
            if self._arm(self.api.busy_count) <= others:
                return
            self._sleep(self.policy.poll)

    def _issue(self, batch: Batch, ids: list[str]) -> None:
        """manualupgrade for VMs behind the model; reimage for VMs on a 'latest' model but an older version."""
        self._hold()
        # the VMs' time starts now: not when the batch was recorded (a wait in between, for a database that went
        # away, say, is not time they had to become healthy)
        issued_at = self.clock.now()
        current = {i.instance_id for i in self.instances if i.latest_model}
        stale, behind_model = [i for i in ids if i in current], [i for i in ids if i not in current]
        try:  # timed as ARM time (a throttled or budgeted call is not time the VMs had)
            if behind_model:
                self._arm(lambda: self.api.upgrade(behind_model))
            if stale:
                self._arm(lambda: self.api.reimage(stale))
        except Conflict as e:
            self.emit("conflict", code=e.code or "Conflict", message=str(e).removeprefix(f"({e.code}) "))
            return  # stays 'issuing': the next turn re-issues what has not started
        self.journal.set_batch(batch, state="issued", started=issued_at)


class _Host:
    """What a strategy's own effects may use of the engine (``turn.Host``): ARM while the claim holds, the
    journal's batches, events."""

    def __init__(self, engine: Engine, wanted: ImageRef) -> None:
        self._engine = engine
        self.api = engine.api
        self.wanted = wanted
        self.rollout_id = engine.r.id

    def arm(self, call: Callable[[], T]) -> T:
        self._engine._hold()
        return self._engine._arm(call)

    def record_batch(self, kind: str, ids: list[str], meta: dict[str, Any]) -> Batch:
        e = self._engine
        return e.journal.add_batch(e.r.id, kind, ids, e.clock.now(), meta)

    def update_batch(self, batch: Batch, **fields: Any) -> None:
        self._engine.journal.set_batch(batch, **fields)

    def issue(self, batch: Batch, ids: list[str]) -> None:
        self._engine._issue(batch, ids)

    def now(self) -> float:
        return self._engine.clock.now()

    def emit(self, kind: str, **data: Any) -> None:
        self._engine.emit(kind, **data)

