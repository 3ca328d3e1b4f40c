"""ARM asynchronous operations: what ``Azure-AsyncOperation`` points at, and when each one ends."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vmssctl.emulator import timing
from vmssctl.emulator.errors import ArmError

if TYPE_CHECKING:
    from vmssctl.emulator.resources.scalesets import ScaleSet
    from vmssctl.emulator.world import World

KEPT = 20_000  # operations remembered; the oldest finished ones go beyond it
FINAL_STEPS = ("booted", "done", "gone")  # an instance's steps that end its part of an operation


@dataclass
class Operation:
    """An ARM async operation: what ``Azure-AsyncOperation`` points at."""

    id: str
    name: str
    location: str
    start: float
    set_key: list | None = None
    pending: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    end_at: float | None = None
    status: str = "InProgress"
    end: float | None = None
    error: dict | None = None
    then: str | None = None  # what finishing does to the scale set: "ready" or "remove"
    result: dict | None = None  # what its Location (operationResults) answers once done, when it has a body


class Operations:
    """Operations of the world: started by the other resources, ended by their instances or a timer."""

    def __init__(self, world: World) -> None:
        self.world = world

    def new(self, name: str, location: str, now: float, ss: ScaleSet | None = None,
            then: str | None = None) -> Operation:
        w = self.world
        op = Operation(id=str(uuid.UUID(int=w.rng.getrandbits(128))), name=name, location=location,
                       start=now, set_key=list(ss.key) if ss else None, then=then)
        w.ops[op.id] = op
        w.touched_ops.add(op.id)  # (for the next save)
        if ss is not None and then:
            ss.busy.append(op.id)
            if then == "remove":
                ss.provisioning = "Deleting"
            elif ss.provisioning != "Creating":
                ss.provisioning = "Updating"
        if len(w.ops) > KEPT:
            for old in [o for o in w.ops.values() if o.status != "InProgress"][:KEPT // 4]:
                del w.ops[old.id]
                w.touched_ops.add(old.id)  # (its row goes at the next save)
        return op

    def done(self, name: str, location: str, result: dict | None = None) -> Operation:
        """An operation over as it starts (Network's load balancer writes and reads): its status says Succeeded,
        its Location gives ``result``."""
        now = self.world.now()
        op = self.new(name, location, now)
        op.status, op.end, op.result = "Succeeded", now, result
        return op

    def seal(self, op: Operation, now: float) -> None:
        """An op with no instance work still takes a moment, as ARM's model updates do."""
        if not op.pending and op.status == "InProgress":
            self.world.touched_ops.add(op.id)
            op.end_at = now + timing.MODEL_UPDATE
            self.world.wake(op.end_at, "op", op.id)

    def due(self, op_id: object, t: float) -> None:
        """The heap says an operation's timer is up."""
        op = self.world.ops.get(str(op_id))
        if op and op.status == "InProgress" and op.end_at is not None and op.end_at <= t:
            self.finish(op, t)

    def finish(self, op: Operation, t: float) -> None:
        w = self.world
        w.touched_ops.add(op.id)  # (for the next save)
        op.end = t
        if op.failures:
            op.status = "Failed"
            first = op.failures[0]
            details = [{"code": f["code"], "target": f"instanceId {f['instanceId']}", "message": f["message"]}
                       for f in op.failures]
            op.error = {"code": first["code"],
                        "message": f"{len(op.failures)} instance(s) failed: " + "; ".join(
                            f"instance {f['instanceId']}: {f['message']}" for f in op.failures[:5]),
                        "details": details}
        elif op.status == "InProgress":
            op.status = "Succeeded"
        if op.set_key:
            ss = w.sets.get((op.set_key[0], op.set_key[1]))
            if ss is not None and op.id in ss.busy:
                ss.busy.remove(op.id)
                if op.then == "remove":
                    del w.sets[ss.key]
                elif not ss.busy:
                    ss.provisioning = "Failed" if op.failures else "Succeeded"
        w.changes += 1

    def status(self, op_id: str) -> Operation:
        w = self.world
        w.advance()
        op = w.ops.get(op_id)
        if op is None:
            raise ArmError(404, "ResourceNotFound", f"The operation '{op_id}' was not found.")
        return op

    def remaining(self, op: Operation) -> float:
        """Simulated seconds until the op is expected to end (its slowest instance), for Retry-After."""
        w = self.world
        ends = [op.end_at] if op.end_at is not None else []
        ss = w.sets.get((op.set_key[0], op.set_key[1])) if op.set_key else None
        for iid in op.pending if ss else ():
            inst = ss.instances.get(iid) if ss else None
            if inst is not None:
                ends += [t for t, action in inst.steps if action in FINAL_STEPS]
        return max(0.0, (max(ends) if ends else w.now() + timing.LRO_POLL) - w.now())
