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
    """Up or Down, as the probe has it at ``now`` (``serving``: the VM answers its probe now)."""
    if serving:
        # serving since healthy_at (None: since before its transitions were recorded): Up once probed
        return UP if inst.healthy_at is None or now - inst.healthy_at >= interval else DOWN
    if inst.unhealthy_at is None:
        return DOWN  # never served (being created)
    was_up = inst.prev_healthy_at is not None and inst.unhealthy_at - inst.prev_healthy_at >= interval
    return UP if was_up and now - inst.unhealthy_at < threshold * interval else DOWN


def changed(inst: Instance, serving: bool, t: float) -> None:
    """Record that the VM started (``serving``) or stopped answering probes at ``t``."""
    if serving:
        inst.healthy_at, inst.unhealthy_at = t, None
    else:
        # (serving since before transitions were recorded: since long ago)
        inst.prev_healthy_at = inst.healthy_at if inst.healthy_at is not None else 0.0
        inst.healthy_at, inst.unhealthy_at = None, t
