"""One turn of a rollout: what it observed, what the journal says of the phase, and the actions it may take.

The vocabulary shared by ``decide``, the strategies and the engine; pure data and arithmetic, no I/O. The
actions are generic effects (issue the model on instances, set the capacity, delete instances, record a batch,
judge it, soak, cancel the platform's own upgrade, wait, finish): the engine carries them out without knowing
which strategy asked, and every number they need (how long to let a batch settle, the policy to fall back to)
is worked out by the strategy when it decides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from vmssctl.model import ImageRef, Instance, RollingStatus, ScaleSet, id_key
from vmssctl.policy import RolloutPolicy
from vmssctl.rollout.gates import BAD, Verdict
from vmssctl.rollout.journal import Batch

if TYPE_CHECKING:
    from vmssctl.gateway import Gateway

T = TypeVar("T")

MODEL_WAIT = 2.0  # re-check a model that is still being updated this often

Needs = Callable[[Instance], bool]  # does this instance still need this phase's work?


@dataclass(frozen=True)
class Phase:
    """This phase (forward or rollback) as the journal and the engine's memory record it."""

    kind: str  # forward | rollback
    batches: tuple[Batch, ...] = ()  # this phase's batches, oldest first
    canary_done: bool = False
    floor_wait_since: float | None = None  # when the floor first held the next batch back
    soured: frozenset[str] = frozenset()  # upgraded instances that went bad while soaking
    forward: tuple[Batch, ...] = ()  # in a rollback: the forward phase's batches (what it did, to undo)

    @property
    def open_batch(self) -> Batch | None:
        return next((b for b in self.batches if b.state in ("issuing", "issued", "retiring")), None)

    @property
    def failed(self) -> frozenset[str]:
        return frozenset(i for b in self.batches for i in b.failed) | self.soured

    @property
    def upgraded(self) -> frozenset[str]:
        """Instances whose batch has been judged (succeeded or failed)."""
        return frozenset(i for b in self.batches if b.state in ("succeeded", "failed") for i in b.instance_ids)

    @property
    def durations(self) -> list[float]:
        return [b.finished - b.started for b in self.batches
                if b.state == "succeeded" and b.finished is not None and b.started is not None]


@dataclass(frozen=True)
class Observation:
    """What one turn saw (observe is the only place that reads ARM)."""

    now: float
    instances: tuple[Instance, ...]
    requested: str | None = None  # pause | resume | abort | rollback, from the journal
    verdicts: Mapping[str, Verdict] = field(default_factory=dict)  # the open batch: ARM's view, then the gates
    elapsed: float = 0.0  # how long the open batch's VMs have had (time waiting on ARM left out)
    model: ScaleSet | None = None  # read when a batch may start, or when upgraded VMs look off the model
    health_grace: float | None = None  # the health extension's grace period, from the last model read
    rolling: RollingStatus | None = None  # Azure's own rolling upgrade, when it is what moves the instances
    seen: Mapping[str, object] = field(default_factory=dict)  # what the strategy observed itself (``observe``)

    @cached_property
    def by_id(self) -> dict[str, Instance]:  # built once a turn: decide, the strategies and the engine all ask
        return {i.instance_id: i for i in self.instances}

    @property
    def healthy(self) -> int:
        return sum(1 for i in self.instances if i.healthy)

    @property
    def bad(self) -> dict[str, str]:
        """The open batch's instances judged bad, with why."""
        return {i: v.reason or "failed" for i, v in self.verdicts.items() if v.state == BAD}

    @property
    def model_busy(self) -> bool:
        """Was the model read, and still being updated?"""
        return self.model is not None and self.model.provisioning_state.lower() in ("updating", "creating")


@dataclass(frozen=True)
class Sight:
    """What a turn already knows when a strategy observes beyond the set's instances: the model last read (None:
    none yet) and whether the open batch's verdicts are all in (True with no batch open). A strategy reads only
    what its next decision needs: nothing about the load balancers while a batch is still upgrading, say."""

    model: ScaleSet | None = None
    settled: bool = True
    elsewhere: tuple[Instance, ...] | None = None  # the instances the open batch is judged on, when on another set


# ------------------------------------------------------------------------------------ actions
@dataclass(frozen=True)
class Wait:
    seconds: float
    why: str
    floor_wait_since: float | None = None  # set: the next batch is held back since then (by the floor, or by_floor
    # False: by something else, e.g. Azure's rolling upgrade pausing between its batches)
    announce: bool = field(default=False, compare=False)  # say it (a "waiting" event) when this wait begins
    by_floor: bool = field(default=True, compare=False)


@dataclass(frozen=True)
class Start:
    """Start the next batch: record it, then one manualupgrade (and reimage for 'latest' refreshes); with
    ``issue`` False only record it (``meta`` says what comes first: the strategy issues it later, e.g. once its
    VMs are drained)."""

    ids: tuple[str, ...]
    floor: int
    settle: float = field(default=0.0, compare=False)  # nothing to see this long after issuing: the first look
    meta: Mapping[str, object] = field(default_factory=dict, compare=False)
    issue: bool = True


@dataclass(frozen=True)
class Reissue:
    """The batch was being issued when the process stopped: issue again what visibly never started."""

    ids: tuple[str, ...]


@dataclass(frozen=True)
class Judge:
    """The open batch has settled: ``bad`` instances (empty: all good); ``failure`` when that ends the phase;
    ``soak``: seconds to watch its instances before the next batch (``--pause``, when work remains)."""

    bad: Mapping[str, str]
    failure: str | None = None
    soak: float = field(default=0.0, compare=False)


@dataclass(frozen=True)
class Soaked:
    """The soak after a batch is over: ``soured`` upgraded instances went unhealthy during it; ``failure`` when
    that is more than the policy allows."""

    soured: tuple[str, ...]
    failure: str | None = None


@dataclass(frozen=True)
class ScaleOut:
    """Set the capacity (new VMs come up on the latest model), recording the batch first (``meta`` with it). When
    ARM refuses: ``fallback`` is the policy to go on with (None: the phase ends with ARM's reason), and the
    refusal is told as ``refused`` (an event type)."""

    capacity: int
    meta: Mapping[str, object]  # surge, base, and watermark (Uniform) or before (Flexible: the names there were)
    settle: float = field(default=0.0, compare=False)
    fallback: RolloutPolicy | None = field(default=None, compare=False)
    refused: str = field(default="scale_out_refused", compare=False)
    label: str = field(default="the scale-out", compare=False)  # what a refusal names
    adding: int = field(default=0, compare=False)  # VMs it adds, and the floor it keeps: what its event says
    floor: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Retire:
    """The VMs the batch added are good: delete these old ones (the batch retires them)."""

    ids: tuple[str, ...]


@dataclass(frozen=True)
class DropAdded:
    """A VM the batch added failed: delete the VMs it added, and end the phase with ``failure``."""

    ids: tuple[str, ...]
    bad: Mapping[str, str]
    failure: str


@dataclass(frozen=True)
class Adopt:
    """Azure's own upgrade has started on these instances: record them as a batch, to be judged like any other."""

    ids: tuple[str, ...]
    base: int  # the set's own size as Azure began the batch (its maxSurge VMs left out): recorded with it


@dataclass(frozen=True)
class Pause:
    """Asked to pause between batches: hold (the engine looks again after ``seconds``)."""

    seconds: float = field(default=5.0, compare=False)


@dataclass(frozen=True)
class CancelUpgrade:
    """Cancel the platform's own upgrade of the set if it is running (its instances in flight finish); told as
    ``event``."""

    event: str


@dataclass(frozen=True)
class Stop:
    """Stop driving this phase because the user asked: ``abort`` or ``rollback``."""

    what: str


@dataclass(frozen=True)
class ModelChanged:
    """Stop without touching anything more (the strategy's own undoing aside: readmit what it drained): someone
    else changed the model's image, or the load balancers in front of the set."""

    reason: str


@dataclass(frozen=True)
class Finish:
    """The phase is over: ``done``, or a failure reason."""

    outcome: str


class Host(Protocol):
    """What an effect of a strategy's own may do: the engine's tools, and nothing else (the engine keeps the
    claim, the journal's rollout row, the events' order and crash safety)."""

    api: Gateway  # the rollout's scale set; ``api.for_set`` reaches others through the same client
    wanted: ImageRef  # the image this phase puts on the instances
    rollout_id: str

    def arm(self, call: Callable[[], T]) -> T:
        """An ARM call, made only while this process still holds the scale set."""
        ...

    def record_batch(self, kind: str, ids: list[str], meta: dict[str, Any]) -> Batch:
        """Record a batch's intent before acting on it (what a resumed rollout finds)."""
        ...

    def update_batch(self, batch: Batch, **fields: Any) -> None:
        ...

    def issue(self, batch: Batch, ids: list[str]) -> None:
        """Upgrade these instances of a recorded batch (manualupgrade, or reimage for a 'latest' refresh)."""
        ...

    def now(self) -> float:
        ...

    def emit(self, kind: str, **data: Any) -> None:
        ...


@runtime_checkable
class Effect(Protocol):
    """An action a strategy defines itself, beyond the shared vocabulary above: it carries out its own writes
    through the host (intent in the journal first, then ARM). Returns how the phase ends, or None to go on."""

    def apply(self, host: Host, phase: Phase) -> str | None:
        ...


Action = (Wait | Start | Reissue | Judge | Soaked | Pause | Stop | ModelChanged | Finish | ScaleOut | Retire | DropAdded
          | Adopt | CancelUpgrade | Effect)


# ------------------------------------------------------------------------------------ arithmetic
def too_many_failed(policy: RolloutPolicy, failed: frozenset[str] | set[str], upgraded: frozenset[str] | set[str]
                    ) -> bool:
    """More unhealthy upgraded instances than ``--max-unhealthy-upgraded`` (a count, or % of those upgraded)."""
    limit = policy.max_unhealthy_upgraded
    return len(failed) > (limit.of(len(upgraded)) if limit.percent else int(limit.value))


def describe(bad: Mapping[str, str]) -> list[str]:
    """``instance 3: why`` for each bad instance, in id order: what events and failure reasons say."""
    return [f"instance {i}: {bad[i]}" for i in sorted(bad, key=id_key)]


def failure_reason(policy: RolloutPolicy, failed: frozenset[str] | set[str], reasons: list[str]) -> str:
    return (f"{len(failed)} upgraded instance(s) unhealthy, more than --max-unhealthy-upgraded "
            f"{policy.max_unhealthy_upgraded}: {'; '.join(reasons)}")


def protected(inst: Instance, policy: RolloutPolicy) -> bool:
    """Does the instance's protection policy keep this rollout's hands off it? Scale set actions (upgrades)
    never touch a VM protected from them; a surge, which deletes VMs, also spares one protected from scale-in."""
    return inst.protected_from_actions or (policy.strategy == "surge" and inst.protected_from_scale_in)


def surging(policy: RolloutPolicy, phase: Phase) -> bool:
    """Does this phase add VMs before retiring old ones? (Rolling back is always in place.)"""
    return policy.strategy == "surge" and phase.kind == "forward"


def window_start(phase: Phase, batch: Batch) -> float | None:
    """Where a batch's measured window (users' requests) begins: when the batch before it in the phase was
    judged (for a surge batch, when its new VMs were good: the old ones it then retired count in the next), or
    this batch's own start. The windows tile the phase, so every failed request belongs to one batch."""
    earlier = [b for b in phase.batches if b.seq < batch.seq and b.finished is not None]
    if not earlier:
        return batch.started
    prev = earlier[-1]
    if "ready_after" in prev.meta and prev.started is not None:
        return prev.started + float(prev.meta["ready_after"])
    return prev.finished


def poll_delay(obs: Observation, phase: Phase, policy: RolloutPolicy, ids: list[str] | None = None,
               durations: list[float] | None = None) -> float:
    """When to look again at a batch in flight: as late as the answer can come, and no later.

    - Booted VMs in the health extension's grace period cannot be judged before it ends (they report
      ``initializing`` until then), so sleep until the last one's grace period is over.
    - Once a batch has been measured, nothing happens before ~90 % of the fastest one.
    - Before that, back off gently (every ``--poll``, at most a quarter of the time elapsed).
    Never past the health timeout.
    """
    batch, grace = phase.open_batch, obs.health_grace
    by_id = obs.by_id
    now, elapsed, poll = obs.now, obs.elapsed, policy.poll
    left = max(1.0, policy.health_timeout - elapsed)
    judged = ids if ids is not None else (batch.instance_ids if batch else [])
    waiting = [by_id[i] for i in judged if i in by_id and not by_id[i].healthy]
    if grace is not None and waiting and all(w.health == "initializing" and w.health_since for w in waiting):
        end = max(w.health_since or now for w in waiting) + grace
        return min(left, max(1.0, end - now + 1.0))
    durations = phase.durations if durations is None else durations
    if durations and elapsed < 0.9 * min(durations):
        return min(left, max(poll, 0.9 * min(durations) - elapsed))
    return min(left, max(poll, elapsed / 4))
