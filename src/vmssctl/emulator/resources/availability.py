"""How many of a scale set's VMs run and are healthy, and the record of every change of those counts: what
the emulator's availability endpoint proves a rollout by (the floor was never breached)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmssctl.emulator.network import probes

if TYPE_CHECKING:
    from vmssctl.emulator.resources.scalesets import ScaleSet
    from vmssctl.emulator.resources.vms import Instance

CAP = 200_000  # records kept per set; the oldest tenth goes beyond it


def counts(ss: ScaleSet, inst: Instance) -> tuple[bool, bool]:
    """(running, healthy) of one VM: healthy is the health extension's verdict, or running and provisioned when
    the model has no health extension."""
    running = inst.power == "running"
    healthy = running and inst.provisioning == "Succeeded" and (
        inst.health == "healthy" or (inst.health is None and ss.health_grace() is None))
    return running, healthy


def healthy(ss: ScaleSet, inst: Instance) -> bool:
    return counts(ss, inst)[1]


def changed(ss: ScaleSet, inst: Instance, before: tuple[bool, bool], t: float) -> None:
    """A VM changed at ``t``: move the set's counts by its difference (``before``: its counts before)."""
    after = counts(ss, inst) if inst.instance_id in ss.instances else (False, False)
    if after != before:
        ss.running += after[0] - before[0]
        ss.healthy += after[1] - before[1]
        record(ss, t)
        if after[1] != before[1]:
            probes.changed(inst, after[1], t)


def recount(ss: ScaleSet, t: float) -> None:
    """Count again from every VM (the model changed what healthy means: a health extension added or removed)."""
    both = [counts(ss, i) for i in ss.instances.values()]
    ss.running, ss.healthy = sum(c[0] for c in both), sum(c[1] for c in both)
    record(ss, t)


def record(ss: ScaleSet, t: float) -> None:
    row = [round(t, 3), ss.running, ss.healthy, ss.capacity]
    if ss.availability and ss.availability[-1][1:] == row[1:]:
        return
    ss.availability.append(row)
    if len(ss.availability) > CAP:
        del ss.availability[: CAP // 10]
        ss.availability_from += CAP // 10


def since(ss: ScaleSet, start_at: float | None, records: bool = True) -> dict:
    """The counts now, their lowest since ``start_at`` (the record in force then included), and the record."""
    rows = ss.availability
    if start_at is not None:
        start = 0
        for i, r in enumerate(rows):
            if r[0] <= start_at:
                start = i
            else:
                break
        rows = rows[start:]
    return {
        "running": ss.running, "healthy": ss.healthy, "capacity": ss.capacity,
        "upgrades": {i.external_id: i.upgrades for i in ss.instances.values() if i.upgrades},
        "minRunning": min((r[1] for r in rows), default=ss.running),
        "minHealthy": min((r[2] for r in rows), default=ss.healthy),
        **({"records": [{"time": r[0], "running": r[1], "healthy": r[2], "capacity": r[3]} for r in rows]}
           if records else {}),
    }
