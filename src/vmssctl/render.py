"""Terminal and JSON renderings of vmssctl's model (rich for the terminal)."""

from __future__ import annotations

import json
from collections import defaultdict
from functools import cache

from rich.console import Console
from rich.table import Table
from rich.text import Text

from vmssctl.model import Instance, ScaleSet


@cache
def console() -> Console:
    return Console(highlight=False)


def state_of(inst: Instance) -> tuple[str, str]:
    """(label, colour) combining power, provisioning, health and model, worst first."""
    if inst.provisioning == "failed":
        return "failed", "bold red"
    if inst.power in ("deallocated", "deallocating"):
        return inst.power, "grey50"
    if inst.power in ("stopped", "stopping"):
        return inst.power, "dark_orange"
    if inst.provisioning in ("updating", "creating", "deleting") or inst.power == "starting":
        return "upgrading", "yellow"
    if inst.health == "initializing":
        return "initializing", "cyan"
    if not inst.healthy:
        return "unhealthy", "red"
    return ("healthy" if inst.latest_model else "outdated"), ("green" if inst.latest_model else "blue")


def scale_set(ss: ScaleSet, output: str) -> None:
    if output == "json":
        print(json.dumps(ss.to_json(), indent=2))
        return
    t = Table(show_header=False, box=None, pad_edge=False)
    for k, v in (("scale set", f"{ss.resource_group}/{ss.name}"), ("location", ss.location),
                 ("capacity", str(ss.capacity)), ("vm size", ss.vm_size), ("image", str(ss.image)),
                 ("image kind", ss.image.kind), ("upgrade policy", ss.upgrade_mode),
                 ("orchestration", ss.orchestration_mode), ("fault domains", str(ss.fault_domains)),
                 ("zones", ", ".join(ss.zones) or "-"), ("provisioning", ss.provisioning_state)):
        t.add_row(Text(k, style="bold"), v)
    console().print(t)


def instances(items: list[Instance], output: str) -> None:
    if output == "json":
        print(json.dumps([i.to_json() for i in items], indent=2))
        return
    t = Table("id", "UD", "FD", "zone", "state", "power", "provisioning", "health", "latest", "image")
    for i in items:
        label, colour = state_of(i)
        t.add_row(i.instance_id, str(i.update_domain), str(i.fault_domain), i.zone or "-",
                  Text(label, style=colour), i.power, i.provisioning, i.health or "-",
                  "yes" if i.latest_model else "no", str(i.image))
    console().print(t)


def heatmap(ss: ScaleSet, items: list[Instance]) -> None:
    """Update domain rows x fault domain columns, a coloured id per instance (vmsseditor's view)."""
    cells: dict[tuple[int, int], list[Instance]] = defaultdict(list)
    for i in items:
        cells[(i.update_domain or 0, i.fault_domain or 0)].append(i)
    fds = max([ss.fault_domains, *[(i.fault_domain or 0) + 1 for i in items]])
    t = Table(title="update domain x fault domain", show_lines=False)
    t.add_column("UD")
    for fd in range(fds):
        t.add_column(f"FD{fd}")
    for ud in range(max([5, *[(i.update_domain or 0) + 1 for i in items]])):
        row = []
        for fd in range(fds):
            text = Text()
            for inst in cells.get((ud, fd), []):
                text.append(f"{inst.instance_id} ", style=state_of(inst)[1])
            row.append(text)
        t.add_row(str(ud), *row)
    console().print(t)
