"""What every gate shares: verdicts, ARM's own view of an instance, the context a gate is asked in, the
template fields it may use, and how an instance's verdicts combine."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from vmssctl import inputs
from vmssctl.errors import UsageError
from vmssctl.model import Instance

GOOD, BAD, WAIT = "good", "bad", "wait"


@dataclass(frozen=True)
class Verdict:
    state: str  # GOOD, BAD or WAIT
    reason: str | None = None
    figure: Mapping[str, object] | None = field(default=None, compare=False)  # what a gate measured, recorded


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


def combine(verdicts: list[Verdict], late: bool, timeout: float) -> Verdict:
    """One instance's gates together: any bad fails; any wait waits (and fails once the timeout is up)."""
    bad = next((v for v in verdicts if v.state == BAD), None)
    if bad:
        return bad
    waiting = next((v for v in verdicts if v.state == WAIT), None)
    if waiting:
        return Verdict(BAD, f"{waiting.reason} after {timeout:.0f}s") if late else waiting
    return Verdict(GOOD)


@dataclass(frozen=True)
class Context:
    """What a gate may use: the scale set, the batch and the time (the engine's clock)."""

    resource_group: str
    name: str
    batch: int
    now: float
    started: float | None = None  # when the batch began (upgraded, drained or scaled out): its window's start


class Gate(Protocol):
    """A gate, as the engine calls it: a verdict per instance of the batch."""

    kind: str

    def check(self, ctx: Context, instances: list[Instance]) -> dict[str, Verdict]: ...


FIELDS = ("instance_id", "resource_group", "name", "update_domain", "fault_domain", "zone", "batch")
_FIELD = re.compile(r"\{(" + "|".join(FIELDS) + r")\}")


def fields(ctx: Context, inst: Instance) -> dict:
    """The template fields a gate's URL, command or query may use."""
    return {"instance_id": inst.instance_id, "resource_group": ctx.resource_group, "name": ctx.name,
            "update_domain": inst.update_domain, "fault_domain": inst.fault_domain, "zone": inst.zone or "",
            "batch": ctx.batch}


def fill(template: str, values: dict) -> str:
    """Put the fields into a template. Only ``{instance_id}``-style names of FIELDS are replaced, so PromQL's
    own braces (``errors{vm="{instance_id}"}``) need no escaping."""
    return _FIELD.sub(lambda m: str(values[m.group(1)]), template)


def per_instance(template: str) -> bool:
    """Does the template name an instance's own field (so it is asked per instance, not once per batch)?"""
    return any(f"{{{f}}}" in template for f in ("instance_id", "update_domain", "fault_domain", "zone"))


def url(value: object, what: str) -> str:
    """An http(s) URL (or URL template) setting."""
    text = inputs.text(value, what)
    if not re.match(r"https?://[^\s/]+", text):
        raise UsageError(f"{what} '{inputs.shown(text)}' is not an http(s) URL")
    return text
