"""What a load balancer's health probe says of a VM at a moment, from when the VM last started or stopped
serving: probes are sent every ``interval`` seconds; a VM is marked Up after one answered probe and Down only after
``threshold`` unanswered ones. That lag is when requests reach a VM that no longer serves.

Pure: the VM's transitions are recorded where its health changes (``resources.availability``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vmssctl.emulator.resources.vms import Instance

UP, DOWN = "Up", "Down"


def state(inst: Instance, serving: bool, now: float, interval: float, threshold: int) -> str:
    """Up or Down, as the probe has it at ``now`` (``serving``: the VM answers its probe now). A VM whose network
    configuration changed (``nics_at``: it joined its pools then) counts as probed only from then."""
    joined = inst.nics_at
    if serving:
        # serving since healthy_at (None: since before its transitions were recorded): Up once probed
        since = inst.healthy_at if joined is None else max(inst.healthy_at or joined, joined)
        return UP if since is None or now - since >= interval else DOWN
    if inst.unhealthy_at is None:
        return DOWN  # never served (being created)
    before = inst.prev_healthy_at if joined is None or inst.prev_healthy_at is None else \
        max(inst.prev_healthy_at, joined)
    was_up = before is not None and inst.unhealthy_at - before >= interval
    return UP if was_up and now - inst.unhealthy_at < threshold * interval else DOWN


def changed(inst: Instance, serving: bool, t: float) -> None:
    """Record that the VM started (``serving``) or stopped answering probes at ``t``."""
    if serving:
        inst.healthy_at, inst.unhealthy_at = t, None
    else:
        # (serving since before transitions were recorded: since long ago)
        inst.prev_healthy_at = inst.healthy_at if inst.healthy_at is not None else 0.0
        inst.healthy_at, inst.unhealthy_at = None, t
