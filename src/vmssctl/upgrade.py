"""Preparing and running an upgrade: everything between parsed input and the engine.

Shared by the CLI and the dashboard: resolve the target image, refuse what Azure would,
find a rollout to resume, validate instance ids, plan, and start the engine. Nothing
is written before ``start``.
"""

from __future__ import annotations

import contextlib
import statistics
from dataclasses import dataclass, replace

from vmssctl.azure import Connection
from vmssctl.errors import Forbidden, NotFound, UsageError, VmssctlError
from vmssctl.gateway import Gateway
from vmssctl.model import Backend, ImageRef, Instance, ScaleSet, id_key
from vmssctl.plan import Plan, make_plan, takes_everything_down
from vmssctl.policy import AZURE_ROLLING, BLUE_GREEN, DRAINED, Amount, RolloutPolicy
from vmssctl.rollout import claim
from vmssctl.rollout.clock import Clock, clock_for
from vmssctl.rollout.engine import REQUESTED, TAG, Engine
from vmssctl.rollout.events import Sink
from vmssctl.rollout.journal import MOVING, Journal, Rollout, scale_set_key
from vmssctl.rollout.progress import DEFAULT_BATCH_SECONDS
from vmssctl.rollout.turn import Phase, protected
from vmssctl.target import ImageChange, behind, diff, same_image, wants_latest


@dataclass
class Prepared:
    scale_set: ScaleSet
    instances: list[Instance]
    target: ImageRef
    policy: RolloutPolicy
    plan: Plan
    resume: Rollout | None  # an unfinished rollout of the same target: run it instead of a new one
    simulated: bool = False  # against the emulator: times are its simulated seconds
    backends: list[Backend] | None = None  # the load balancers in front of the set, when the plan read them
    quota: str | None = None  # what the region's vCPU quota says of the VMs a surge or blue/green adds
    image: str | None = None  # whether the image can be used in the set's region (None: not checked)
    measured: tuple[float, str] | None = None  # (median batch seconds, rollout) of the set's last good rollout

    @property
    def protected(self) -> list[str]:
        """Instances the rollout leaves alone because of their protection policy."""
        return [i.instance_id for i in self.instances if protected(i, self.policy)]

    @property
    def diff(self) -> list[tuple[str, str | None, str | None]]:
        return diff(self.scale_set.image, self.target)

    @property
    def nothing_to_do(self) -> bool:
        """Every instance in scope already runs the latest model, the model names the target and nothing is left
        to resume: there is no rollout to start."""
        return self.plan.pending == 0 and not self.diff and self.resume is None

    def estimate_seconds(self) -> float:
        if self.policy.strategy == BLUE_GREEN:  # green comes up, then the bake (which covers the drain)
            return DEFAULT_BATCH_SECONDS + max(self.policy.bake, self.policy.drain_timeout)
        n = len(self.plan.batches)
        return n * self.batch_seconds + max(0, n - 1) * self.policy.pause

    @property
    def batch_seconds(self) -> float:
        """A batch, drain included: as the set's last rollout measured them; until one has, what the emulator's
        VMs take (its upgrade, then the set's health grace period), or a typical Azure figure."""
        if self.measured is not None:
            return self.measured[0]
        drain = self.policy.drain_timeout if (self.policy.drain == "lb" and self.scale_set.lb_pools) or \
            self.policy.drain in ("hook", "appgw") else 0.0
        return (self._emulated() or DEFAULT_BATCH_SECONDS) + drain

    def _emulated(self) -> float | None:
        """The emulator's durations for a batch (its VMs take as long as its timing table says, which follows
        recorded Azure reimages) and one poll to see it; None against Azure."""
        if not self.simulated:
            return None
        from vmssctl.emulator import timing

        grace = self.scale_set.health_grace
        if grace is None and self.scale_set.health_signal == "Application Health extension":
            grace = timing.HEALTH_GRACE
        return timing.upgrade_seconds() + (grace or 0.0) + self.policy.poll

    @property
    def estimate_basis(self) -> str:
        """Where the estimate's batch time comes from, in the plan's words."""
        if self.measured is not None:
            return f"{_clock(self.measured[0])} a batch, as rollout {self.measured[1]} of this set took"
        if self.simulated:
            return f"{_clock(self.batch_seconds)} a batch, the emulator's upgrade and the set's health grace period"
        return f"typical {_clock(DEFAULT_BATCH_SECONDS)} a batch"

    def to_json(self) -> dict:
        from vmssctl.render import load_balancing

        return {
            "scaleSet": f"{self.scale_set.resource_group}/{self.scale_set.name}",
            "from": self.scale_set.image.to_json(), "to": self.target.to_json(),
            "diff": [{"field": f, "from": a, "to": b} for f, a, b in self.diff],
            "policy": self.policy.to_json(), "plan": self.plan.to_json(),
            "estimateSeconds": self.estimate_seconds(), "estimateBasis": self.estimate_basis,
            "resume": self.resume.id if self.resume else None,
            "healthSignal": health_signal(self.scale_set, self.policy), "simulated": self.simulated,
            "protected": self.protected, "quota": _plain(self.quota) if self.quota else None,
            "image": _plain(self.image) if self.image else None,
            **({"loadBalancing": load_balancing(self.backends)} if self.backends is not None else {}),
        }


def prepare(api: Gateway, journal: Journal, conn: Connection, change: ImageChange,
            policy: RolloutPolicy) -> Prepared:
    """Read-only: two GETs (the model and one instance listing) and the journal."""
    change.validate()
    ss = api.get()
    key = scale_set_key(conn.subscription, api.resource_group, api.name)
    active = journal.active_for(key)
    target = change.apply(ss.image) if not (active and change.empty) else ImageRef(**active.target)
    if active is not None:
        if claim.running(journal, active):
            raise UsageError(f"rollout {active.id} is running in another vmssctl process right now: watch it with "
                             f"'vmssctl rollout status {active.id}', or pause/abort it")
        if not same_image(ImageRef(**active.target), target):
            raise UsageError(f"rollout {active.id} ({active.state}) is upgrading this scale set to "
                             f"{ImageRef(**active.target)}: resume, abort or roll it back first")
        policy = RolloutPolicy.from_json(active.policy)
    tag = ss.tags.get(TAG)
    if tag and (active is None or tag != active.id):
        other = None
        with contextlib.suppress(UsageError):
            other = journal.get(tag)
        if other is None or other.active:
            raise UsageError(f"the scale set is tagged '{TAG}={tag}': another vmssctl rollout holds it (from another "
                             "machine?). If that rollout is gone, remove the tag and run again.")
    if ss.orchestration_mode.lower() == "flexible" and policy.by == "update-domain":
        raise UsageError(f"{api.resource_group}/{api.name} is a Flexible scale set, which has no update domains: use "
                         "--by fault-domain, --by zone or --by batch")
    mode = ss.upgrade_mode.lower()
    model_changes = not same_image(ss.image, target)
    if policy.strategy == BLUE_GREEN:
        _green_is_free(api, ss, target, active)
    elif mode != "manual" and (model_changes or policy.strategy == AZURE_ROLLING):
        policy = azure_driven(ss, policy)
    image = _image_check(api, ss, target, policy) if model_changes and active is None else None
    policy, backends = drain_for(api, ss, policy)
    instances = api.instances()
    known = {i.instance_id for i in instances}
    unknown = [i for i in policy.instances if i not in known]
    if unknown:
        raise UsageError(f"unknown instance id(s) {', '.join(unknown)} in {api.resource_group}/{api.name} "
                         f"(it has {', '.join(sorted(known, key=id_key)[:20])}{' ...' if len(known) > 20 else ''})")
    newest = api.newest_version(ss.location, target) if wants_latest(target) and not model_changes else None
    plan = make_plan(instances, policy, (lambda i: not protected(i, policy)) if model_changes else
                     (lambda i: not protected(i, policy) and behind(i.latest_model, i.image, newest)),
                     canary=0 if (active and active.canary_done) else None)
    if plan.pending and not health_signal(ss, policy) and not policy.no_health_signal:
        raise UsageError(f"{api.resource_group}/{api.name} has no health signal (no Application Health extension, no "
                         "load balancer probe) and no --probe-url or --hook: only power and provisioning state could "
                         "be checked, so an image that boots but serves nothing would pass. Add a gate, or pass "
                         "--no-health-signal to go on anyway")
    if policy.strategy == AZURE_ROLLING:  # Azure's batches, as its rollingUpgradePolicy will make them
        pending = [i for b in plan.batches for i in b]
        size = azure_batch(ss, plan.capacity)
        plan = Plan([pending[k:k + size] for k in range(0, len(pending), size)], plan.capacity, size,
                    plan.capacity if ss.rolling_max_surge else max(0, plan.capacity - size), plan.skipped)
    elif policy.strategy == "surge":  # the canary, then batches of --max-surge, each replaced by as many new VMs
        size, pending = policy.surge_count(plan.capacity), [i for b in plan.batches for i in b]
        canary = 0 if (active and active.canary_done) else min(policy.canary, len(pending))
        plan = Plan(([pending[:canary]] if canary else []) +
                    [pending[k:k + size] for k in range(canary, len(pending), size)], plan.capacity, 0,
                    plan.capacity, plan.skipped)
    elif policy.strategy == BLUE_GREEN:  # one batch: the whole set, replaced by a new one beside it
        pending = [i for b in plan.batches for i in b]
        plan = Plan([pending] if pending else [], plan.capacity, 0, plan.capacity, plan.skipped)
    elif plan.pending and takes_everything_down(policy, plan):
        raise UsageError(f"{api.resource_group}/{api.name} has {plan.capacity} instance(s): this plan would take "
                         "every one down at once. Pass --max-unavailable 100% to accept that")
    if policy.canary and plan.capacity > 1 and policy.canary >= plan.capacity and not (active and active.canary_done):
        raise UsageError(f"--canary {policy.canary}: the set has only {plan.capacity} instances; a canary is a few "
                         "of them, upgraded first")
    quota = _quota(api, ss, policy, plan, len(instances)) if plan.pending and active is None else None
    return Prepared(ss, instances, target, policy, plan, active, conn.is_emulator, backends, quota, image,
                    measured(journal, key, policy))


def measured(journal: Journal, key: str, policy: RolloutPolicy) -> tuple[float, str] | None:
    """The median batch (drain included) of the set's last good rollout of the same strategy and batching, with
    its id: what this set's VMs, image and health signal really take, in place of a typical figure."""
    last = journal.last_succeeded(key)
    if last is None:
        return None
    was = RolloutPolicy.from_json(last.policy)
    if (was.strategy, was.drain, was.drain_timeout) != (policy.strategy, policy.drain, policy.drain_timeout):
        return None
    took = Phase("forward", tuple(b for b in journal.batches(last.id) if b.kind == "forward")).durations
    return (statistics.median(took), last.id) if took else None


def _clock(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _image_check(api: Gateway, ss: ScaleSet, target: ImageRef, policy: RolloutPolicy) -> str | None:
    """Before anything changes: is the target published in the set's region (a platform version), or replicated
    there (a gallery version)? Not: refused, one line, exit 2, unless it is replicating and --wait-for-image says
    to wait. Returns what the plan says of it (None: nothing vmssctl can check)."""
    try:
        seen = api.image_availability(ss.location, target)
    except VmssctlError as e:  # (could not ask: the model update will say, with nothing overwritten)
        return f"not checked ({str(e)[:120]})"
    if seen is None or seen.ready:
        return seen.said if seen else None
    where = f"{api.resource_group}/{api.name}"
    if seen.pending and policy.wait_for_image > 0:
        return f"[yellow]{seen.said}[/]: the rollout waits up to {policy.wait_for_image:.0f}s for it first"
    raise UsageError(f"{where}: {seen.said}; nothing was changed"
                     + (" (--wait-for-image DUR waits for the replication)" if seen.pending else ""))


def _plain(text: str) -> str:
    from rich.text import Text

    return Text.from_markup(text).plain


def _quota(api: Gateway, ss: ScaleSet, policy: RolloutPolicy, plan: Plan, live: int) -> str | None:
    """The VMs a surge or blue/green adds, against the region's vCPU quota (Compute's usages), before anything
    changes: blue/green, or a surge with no fallback, that does not fit is refused; a surge that falls back in place
    says it will. Returns what the plan says of it (None: nothing added)."""
    if policy.strategy not in ("surge", BLUE_GREEN):
        return None
    adding = (policy.green_capacity or live) if policy.strategy == BLUE_GREEN else policy.surge_count(plan.capacity)
    try:
        quota = api.quota(ss.location, ss.vm_size)
    except (VmssctlError, ValueError) as e:  # (a credential that may not read usages: the scale-out will say)
        return f"not checked ({str(e)[:120]})"
    if quota is None:
        return f"not checked (Compute lists no size {ss.vm_size} in {ss.location})"
    short = quota.shortfall(adding)
    if short is None:
        return (f"{adding} more {ss.vm_size} VM(s) = {adding * quota.vcpus} vCPUs fit ({quota.family}: "
                f"{quota.family_free:,} of {quota.family_limit:,} free; regional: {quota.regional_free:,} of "
                f"{quota.regional_limit:,})")
    where = f"{api.resource_group}/{api.name}"
    if policy.strategy == BLUE_GREEN:
        raise UsageError(f"--strategy blue-green on {where}: {short} in {ss.location}. Ask for a quota increase, or "
                         f"use --strategy surge (at most {quota.fits()} at a time fit) or in-place")
    if policy.surge_fallback != "in-place":
        raise UsageError(f"--strategy surge on {where}: {short} in {ss.location}. Ask for a quota increase, lower "
                         f"--max-surge (at most {quota.fits()} fit), or pass --surge-fallback in-place")
    return f"[yellow]{short}[/]: the surge will be refused and go on in place (--surge-fallback in-place)"


def _green_is_free(api: Gateway, ss: ScaleSet, target: ImageRef, active: Rollout | None) -> None:
    """Blue/green: the new set's name must be free, or that of this rollout's green set (a resumed one)."""
    from vmssctl.rollout.strategies.blue_green import ROLLOUT_TAG, green_name

    name = green_name(ss.name, target)
    try:
        other = api.for_set(name).get()
    except NotFound:
        return
    if active is None or other.tags.get(ROLLOUT_TAG) != active.id:
        raise UsageError(f"--strategy blue-green would create {api.resource_group}/{name}, and a scale set of that "
                         "name exists that is not this rollout's: delete or rename it, or choose another image")


def azure_driven(ss: ScaleSet, policy: RolloutPolicy) -> RolloutPolicy:
    """A Rolling or Automatic set is upgraded by Azure itself once its model changes: vmssctl changes the model,
    watches and gates. Refuses what Azure would decide instead (batches, canary, surge) and an Automatic set
    without --allow-automatic. Returns the policy with the strategy that watches Azure's upgrade."""
    where = f"{ss.resource_group}/{ss.name}"
    if policy.strategy == AZURE_ROLLING:  # resuming: checked when it began
        return policy
    if ss.upgrade_mode.lower() == "automatic" and not policy.allow_automatic:
        raise UsageError(f"{where} has upgrade policy Automatic: changing its image makes Azure upgrade every instance "
                         "at once (an outage). Pass --allow-automatic to let it (vmssctl watches, gates and rolls "
                         f"back), or set the policy to Rolling or Manual first (az vmss update -g {ss.resource_group} "
                         f"-n {ss.name} --set upgradePolicy.mode=Rolling)")
    chosen = [flag for flag, on in (
        ("--strategy surge", policy.strategy == "surge"), ("--canary", policy.canary),
        ("--instances", policy.instances),
        ("--batch-size", policy.batch_size is not None), ("--batch-percent", policy.batch_percent is not None),
        (f"--by {policy.by}", policy.by != "batch"), ("--max-unavailable", policy.max_unavailable is not None),
        ("--max-surge", policy.max_surge is not None), ("--pause", policy.pause), ("--window", policy.windows))
        if on]
    if chosen:
        how = (f"batches of {ss.rolling_batch_percent or 20} % per its rollingUpgradePolicy"
               + (", new VMs first (maxSurge)" if ss.rolling_max_surge else "")
               if ss.upgrade_mode.lower() == "rolling" else "every instance at once")
        raise UsageError(f"{where} has upgrade policy {ss.upgrade_mode}: Azure's own upgrade decides the batches "
                         f"({how}), so {', '.join(chosen)} cannot apply. Change the scale set's rollingUpgradePolicy, "
                         "or set its policy to Manual to let vmssctl batch")
    return replace(policy, strategy=AZURE_ROLLING)


def drain_for(api: Gateway, ss: ScaleSet, policy: RolloutPolicy) -> tuple[RolloutPolicy, list[Backend] | None]:
    """``--drain auto`` (the default) made ``lb`` or ``none``: lb when the strategy drains and the set is behind a
    load-balancing rule with a health probe. Either way a set behind load balancers is drained only with the
    permissions it takes, asked before anything changes: a refusal is one line naming what is missing, with
    ``--drain none`` as the explicit way on. Returns the policy, and what the load balancers said (None: not
    read)."""
    from vmssctl.rollout.strategies.drain import NEEDS

    if policy.drain == "none" or policy.strategy not in DRAINED:
        return (replace(policy, drain="none") if policy.drain == "auto" else policy), None
    where = f"{ss.resource_group}/{ss.name}"
    if policy.drain == "appgw" and (not ss.gateway_pools or ss.orchestration_mode.lower() == "flexible"):
        raise UsageError(f"--drain appgw: {where} names no Application Gateway pool" if not ss.gateway_pools else
                         f"--drain appgw takes a Uniform set's VMs out of a gateway's pool; {where} is Flexible (its "
                         "VMs' network interfaces are resources of their own): use --drain hook")
    network = api.network() if ss.fronted else None
    if network is None:
        return (replace(policy, drain="none") if policy.drain == "auto" else policy), None
    if policy.drain in ("hook", "appgw"):  # (what stands in front says when readmitted VMs count again)
        try:
            return policy, network.backends(ss)
        except Forbidden as e:
            raise UsageError(f"{where} is behind load balancers vmssctl may not read: the credential lacks "
                             f"{e.action or e}. Grant it, or pass --drain none") from None
    backends = []
    try:
        missing = network.refused(ss, NEEDS)
        if not missing:
            backends = network.backends(ss)
    except Forbidden as e:  # (the permissions API could not tell, or a deny it does not show)
        missing = [e.action or str(e)]
    if missing:
        raise UsageError(f"{where} is behind a load balancer vmssctl may not drain: the credential lacks "
                         f"{'; '.join(missing)} (Network Contributor on the load balancer has it). Grant it, or "
                         "pass --drain none to upgrade without draining (requests in flight on a stopping VM fail)")
    if policy.drain == "auto":
        # (an Application Gateway has no admin state to drain by: lb only for a load balancer's probed rule)
        return replace(policy, drain="lb" if any(b.probe and not b.gateway for b in backends) else "none"), backends
    return policy, backends


def azure_batch(ss: ScaleSet, capacity: int) -> int:
    """How many instances Azure's own upgrade takes at once: maxBatchInstancePercent of a Rolling set, all of an
    Automatic one."""
    if ss.upgrade_mode.lower() != "rolling":
        return max(1, capacity)
    return max(1, capacity * (ss.rolling_batch_percent or 20) // 100)


def health_signal(ss: ScaleSet, policy: RolloutPolicy) -> str | None:
    """What will tell vmssctl an upgraded VM is good, beyond power and provisioning state (None: nothing)."""
    names = {"probe": "HTTP probe", "hook": "command hook", "prometheus": "Prometheus query", "web": "web check"}
    gates = [names.get(str(g.get("kind")), "gate") for g in policy.all_gates()]
    signals = ([ss.health_signal] if ss.health_signal else []) + gates
    return " + ".join(signals) or None


def begin(journal: Journal, conn: Connection, api: Gateway, prepared: Prepared, fleet: str | None = None) -> Rollout:
    """Record the rollout in the journal (or take up the one being resumed); the first write of all. ``fleet``: the
    fleet run that starts (or resumes) it."""
    r = prepared.resume
    if r is None:
        # the budget is fixed by the plan the user approved, so the floor stays the same to the last batch
        # (re-planning what is left would otherwise shrink the batches and raise the floor as it goes)
        policy = prepared.policy if prepared.policy.max_unavailable is not None or \
            prepared.policy.strategy in ("surge", AZURE_ROLLING) else \
            replace(prepared.policy, max_unavailable=Amount(prepared.plan.max_unavailable, False))
        if policy.strategy == AZURE_ROLLING:  # Azure's batch size, kept for the progress of what is left
            size = Amount(prepared.plan.max_unavailable, False)
            policy = replace(policy, max_surge=size) if prepared.scale_set.rolling_max_surge else \
                replace(policy, max_unavailable=size)
        return journal.create(conn.subscription, api.resource_group, api.name, conn.endpoint,
                              prepared.target.to_json(), prepared.scale_set.image.to_json(), policy.to_json(),
                              conn.to_json(), fleet=fleet)
    if r.requested == "pause" or r.state == "paused":
        journal.unpause(r)
    if fleet and r.fleet != fleet:
        journal.update(r.id, fleet=fleet)
    return journal.get(r.id)


def run(api: Gateway, journal: Journal, conn: Connection, rollout: Rollout, sinks: list[Sink],
        clock: Clock | None = None) -> int:
    """Run the engine on a recorded rollout until it ends; returns the exit code. The composition root: the
    policy's gates are built here, with what they need (the connection), and handed to the engine."""
    from vmssctl.rollout.gates import Deps, build

    gates = build(RolloutPolicy.from_json(rollout.policy).all_gates(), Deps(connection=conn))
    own = clock or clock_for(conn)
    try:
        return Engine(api, journal, rollout, own, sinks, gates).run()
    finally:
        if clock is None:
            own.close()


def start(api: Gateway, journal: Journal, conn: Connection, prepared: Prepared, sinks: list[Sink],
          clock: Clock | None = None) -> int:
    return run(api, journal, conn, begin(journal, conn, api, prepared), sinks, clock)


def reopen(journal: Journal, rollout: Rollout, rollback: bool = False) -> Rollout:
    """A stopped rollout made ready to run again: to roll back, or unpaused."""
    if rollback:
        journal.update(rollout.id, state="rolling_back", phase="rollback",
                       error=REQUESTED, requested=None)
    elif rollout.state == "paused":
        journal.unpause(rollout)
    return journal.get(rollout.id)


def resume(api: Gateway, journal: Journal, conn: Connection, rollout: Rollout, sinks: list[Sink],
           rollback: bool = False) -> int:
    """Resume or roll back in this thread (a fleet's step; a lone command runs it as its own workflow)."""
    return run(api, journal, conn, reopen(journal, rollout, rollback), sinks)


STEERS = ("pause", "resume", "abort", "rollback")


def refusal(rollout: Rollout, op: str) -> str | None:
    """Why ``op`` cannot be done to ``rollout`` whoever asks (None: it can)."""
    if op == "pause" and RolloutPolicy.from_json(rollout.policy).strategy == AZURE_ROLLING:
        return (f"rollout {rollout.id} is Azure's own rolling upgrade, which cannot be paused: abort "
                "cancels it (instances in flight finish), rollback puts the previous image back")
    if op in ("pause", "abort", "resume") and not rollout.active:
        return f"rollout {rollout.id} is {rollout.state}: there is nothing to {op}"
    if op == "rollback" and rollout.state == "rolled_back":
        return f"rollout {rollout.id} is already rolled back"
    return None


def controls(rollout: Rollout, driven: bool) -> dict[str, str | None]:
    """Each steer a screen offers now, with why it cannot act (None: it can): ``refusal``'s reasons, and those
    that would do nothing (pause what is paused, resume what a live process drives, ask twice)."""
    out: dict[str, str | None] = {}
    for op in STEERS:
        why = refusal(rollout, op)
        if why is None and rollout.requested == op and not (op == "pause" and rollout.state == "paused"):
            why = f"{op} already asked of the process running it"
        elif why is None and op == "pause" and rollout.state not in MOVING:
            why = f"rollout {rollout.id} is {rollout.state}"
        elif why is None and op == "resume" and rollout.state in MOVING and driven:
            why = f"rollout {rollout.id} is {rollout.state.replace('_', ' ')} (a live process drives it)"
        elif why is None and op == "rollback" and rollout.state == "rolling_back" and driven:
            why = f"rollout {rollout.id} is rolling back"
        out[op] = why
    return out


def steer(journal: Journal, rollout: Rollout, op: str) -> tuple[str, str] | None:
    """Pause, resume, abort or roll back a rollout: ask the process running it, or settle it in the journal.

    Returns (event type, what was done), or None when nobody runs it and the caller must run the
    engine here (resume, rollback). Shared by ``vmssctl rollout`` and the dashboard.
    """
    if op not in STEERS:
        raise UsageError(f"unknown rollout operation '{op}' (use {', '.join(STEERS)})")
    why = refusal(rollout, op)
    if why:
        raise UsageError(why)
    if claim.running(journal, rollout):
        journal.request(rollout.id, op)
        return f"{op}_requested", f"asked the running process to {op} rollout {rollout.id}"
    if op in ("pause", "abort"):
        journal.update(rollout.id, state="paused" if op == "pause" else "aborted", requested=None)
        return op, f"rollout {rollout.id} {'paused' if op == 'pause' else 'aborted'}"
    return None
