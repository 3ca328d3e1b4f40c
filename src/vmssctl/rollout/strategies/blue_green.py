"""Blue/green, a skeleton: a new scale set ("green") on the new image beside the serving one ("blue"), and blue
scaled to nothing once green is healthy. It proves the strategy seam: this file and three gateway methods
(``for_set``, ``clone``, ``delete_set``) are all it took; the engine was not touched.

Not yet what the blue/green issue asks: no load balancer (green is not admitted, blue not drained), no gates on
green, no quota check, no --keep-blue/--bake, not offered on the command line. Registered when imported.

Crash-safe as the others: the green set's name is recorded (a batch's meta) before it is created, and created
with If-None-Match, so a resumed rollout finds it by name and never makes a second one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

from vmssctl.errors import NotFound, PreconditionFailed
from vmssctl.gateway import Gateway
from vmssctl.model import ImageRef, Instance
from vmssctl.plan import Plan
from vmssctl.policy import RolloutPolicy
from vmssctl.rollout.journal import Batch
from vmssctl.rollout.strategies import Common, register
from vmssctl.rollout.turn import Action, Finish, Host, Needs, Observation, Phase, Sight, Wait

NAME = "blue-green"
ROLLOUT_TAG = "vmssctl-rollout"


def green_name(blue: str, image: ImageRef) -> str:
    """The new set's name: the old one's and the image's short tag (its version, or the last part of its id or
    URI), within a scale set name's 64 letters, digits, '-', '_' and '.'."""
    raw = image.version or (image.id or image.uri or "green").rstrip("/").rsplit("/", 1)[-1]
    tag = "".join(c if c.isalnum() or c in "-_." else "-" for c in raw)[-20:].strip("-_.") or "green"
    return f"{blue[: 63 - len(tag)]}-{tag}"


@dataclass(frozen=True)
class CreateGreen:
    """Record the green set's name (intent first), then create it: this set's model, the wanted image, blue's
    capacity, tagged as this rollout's."""

    capacity: int
    name: str | None = None  # None: a new one, named now; else the recorded one (a create that never landed)

    def apply(self, host: Host, phase: Phase) -> str | None:
        name = self.name
        if name is None:
            name = green_name(host.api.name, host.wanted)
            host.record_batch(phase.kind, [], {"green": name, "blue_capacity": self.capacity})
            host.emit("green_creating", name=name, capacity=self.capacity, image=str(host.wanted))
        with contextlib.suppress(PreconditionFailed):  # it exists: created before a crash (observe says whose)
            host.arm(lambda: host.api.clone(name, host.wanted, self.capacity, {ROLLOUT_TAG: host.rollout_id}))
        return None


@dataclass(frozen=True)
class RetireBlue:
    """Green serves: blue goes to capacity 0 (its model stays, so it comes back in minutes). Intent first."""

    batch: Batch

    def apply(self, host: Host, phase: Phase) -> str | None:
        host.update_batch(self.batch, meta={**self.batch.meta, "blue_down": True})
        host.arm(lambda: host.api.set_capacity(0))
        host.emit("blue_scaled_down", green=self.batch.meta["green"])
        return None


@dataclass(frozen=True)
class Switched:
    """Blue has no VMs left: the batch (green) succeeded, and so did the phase."""

    batch: Batch

    def apply(self, host: Host, phase: Phase) -> str | None:
        host.update_batch(self.batch, state="succeeded")
        return "done"


@dataclass(frozen=True)
class DropGreen:
    """Green failed: delete it (blue never stopped serving), and end the phase with why."""

    batch: Batch
    failure: str

    def apply(self, host: Host, phase: Phase) -> str | None:
        name = str(self.batch.meta["green"])
        host.update_batch(self.batch, state="failed")
        host.arm(lambda: host.api.for_set(name).delete_set())
        host.emit("green_deleted", name=name, reason=self.failure)
        return self.failure


class BlueGreen(Common):
    name = NAME
    changes_model = False  # blue's model is left as it is: green gets the image

    def observe(self, api: Gateway, phase: Phase, policy: RolloutPolicy, sight: Sight) -> Mapping[str, object]:
        """Green's instances, once its name is recorded (None: not there, or not this rollout's)."""
        green = _green(phase)
        if green is None:
            return {}
        other = api.for_set(str(green.meta["green"]))
        try:
            model = other.get()
        except NotFound:
            return {"green": None}
        return {"green": other.instances(), "tag": model.tags.get(ROLLOUT_TAG),
                "rollout": api.get().tags.get(ROLLOUT_TAG)}

    def judged(self, batch: Batch, instances: tuple[Instance, ...] | list[Instance]) -> list[str] | None:
        return None  # green is judged on what observe saw of it, not blue's instances

    def remaining(self, obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs) -> Plan:
        behind = [i.instance_id for i in obs.instances if needs(i)]
        return Plan([behind] if behind and not phase.batches else [], len(obs.instances), 0, len(obs.instances), [])

    def next(self, obs: Observation, phase: Phase, policy: RolloutPolicy, needs: Needs, plan: Plan) -> Action:
        if phase.kind != "forward":
            return Finish("a blue/green rollback (readmit blue, delete green) is not in this skeleton")
        green = _green(phase)
        if green is None:
            live = [i for i in obs.instances if i.provisioning != "deleting"]
            return CreateGreen(len(live)) if live else Finish("done")
        name, capacity = str(green.meta["green"]), int(green.meta["blue_capacity"])
        down = bool(green.meta.get("blue_down"))
        vms = obs.seen.get("green")
        if not isinstance(vms, list):  # not there: the create never landed (If-None-Match keeps it to one)
            return Finish(f"the green scale set {name} is gone") if down else CreateGreen(capacity, name)
        if obs.seen.get("tag") != obs.seen.get("rollout"):
            return Finish(f"a scale set named {name} exists and is not this rollout's; nothing was changed")
        failed = [i.instance_id for i in vms if i.provisioning == "failed"]
        if failed and not down:
            return DropGreen(green, f"{len(failed)} green instance(s) failed to provision: {', '.join(failed)}")
        if not down:
            if len(vms) < capacity or not all(i.healthy for i in vms):
                if obs.now - (green.started or obs.now) > policy.health_timeout:
                    return DropGreen(green, f"green not healthy after {policy.health_timeout:.0f}s")
                return Wait(policy.poll, "green coming up")
            return RetireBlue(green)
        return Wait(policy.poll, "blue scaling down") if obs.instances else Switched(green)


def _green(phase: Phase) -> Batch | None:
    return next((b for b in phase.batches if "green" in b.meta), None)


register(BlueGreen())
