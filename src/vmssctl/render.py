"""Terminal and JSON renderings of vmssctl's model (rich for the terminal)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from datetime import datetime
from functools import cache

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

from vmssctl.model import STATES, Backend, ImageRef, Instance, ScaleSet, grid_shape


@cache
def console() -> Console:
    return Console(highlight=False)


COLOURS = {s.name: s.terminal for s in STATES}


def state_of(inst: Instance) -> tuple[str, str]:
    """(label, rich colour) of an instance's combined state."""
    return inst.state, COLOURS[inst.state]


def scale_set(ss: ScaleSet, output: str, backends: list[Backend] | None = None, unreadable: str | None = None) -> None:
    rules = load_balancing(backends or [])
    if output == "json":
        extra = {"loadBalancing": rules} if backends is not None else {}
        print(json.dumps({**ss.to_json(), **extra, **({"loadBalancingError": unreadable} if unreadable else {})},
                         indent=2))
        return
    t = Table(show_header=False, box=None, pad_edge=False)
    for k, v in (("scale set", f"{ss.resource_group}/{ss.name}"), ("location", ss.location),
                 ("capacity", str(ss.capacity)), ("vm size", ss.vm_size), ("image", str(ss.image)),
                 ("image kind", ss.image.kind), ("upgrade policy", ss.upgrade_mode),
                 ("orchestration", ss.orchestration_mode), ("fault domains", str(ss.fault_domains)),
                 ("zones", ", ".join(ss.zones) or "-"), ("provisioning", ss.provisioning_state)):
        t.add_row(Text(k, style="bold"), v)
    for r in rules:
        t.add_row(Text("load balancing", style="bold"), rule_line(r))
    if unreadable:
        t.add_row(Text("load balancing", style="bold"), Text(unreadable, style="yellow"))
    elif ss.fronted and not rules:
        t.add_row(Text("load balancing", style="bold"), "pools named, no rule on them")
    console().print(t)


def rule_line(r: dict) -> str:
    """One load-balancing rule in front of a set, as ``show``, the plan and the dashboard all say it."""
    admin = f"; admin state Down: {', '.join(r['adminDown'])}" if r["adminDown"] else ""
    what = "application gateway " if r.get("gateway") else ""
    return (f"{what}{r['loadBalancer']} rule {r['rule']} (probe {r['probe'] or 'none'}): {r['up']} Up, "
            f"{r['down']} Down{admin}")


def load_balancing(backends: list[Backend]) -> list[dict]:
    """Per load balancer rule: how many of the set's VMs it sends new connections to (Up), which not (Down), and
    which an admin state holds Down."""
    rules: dict[tuple[str, str], dict] = {}
    for b in backends:
        r = rules.setdefault((b.load_balancer, b.rule), {"loadBalancer": b.load_balancer, "rule": b.rule,
                                                         "probe": b.probe or None, "up": 0, "down": 0,
                                                         "downInstances": [], "adminDown": [],
                                                         **({"gateway": True} if b.gateway else {})})
        r["up" if b.state == "Up" else "down"] += 1
        if b.state != "Up":
            r["downInstances"].append(b.instance_id)
        if b.admin == "Down":
            r["adminDown"].append(b.instance_id)
    return list(rules.values())


def instances(items: list[Instance], output: str) -> None:
    if output == "json":
        print(json.dumps([i.to_json() for i in items], indent=2))
        return
    # Fits 80 columns whole: the state label already combines power, provisioning, health and model (-o json has
    # each), the image is its version (the set's image is in `show`); a Flexible set's VMs (longer names) have no
    # update domain, so no UD column
    uds = any(i.update_domain is not None for i in items)
    t = Table(Column("id", no_wrap=True), *(["UD"] if uds else []), "FD", "zone", Column("state", no_wrap=True),
              Column("health", overflow="ellipsis", no_wrap=True), "latest", Column("image", no_wrap=True),
              box=box.SIMPLE_HEAD, pad_edge=False)
    for i in items:
        label, colour = state_of(i)
        t.add_row(i.instance_id, *([_domain(i.update_domain)] if uds else []), _domain(i.fault_domain),
                  i.zone or "-", Text(label, style=colour), i.health or "-", "yes" if i.latest_model else "no",
                  _version(i.image))
    console().print(t)


def _domain(value: int | None) -> str:
    return "-" if value is None else str(value)


def _version(image: ImageRef) -> str:
    """What tells an instance's image from the next: a platform image's exact version, a gallery image's version
    (the id's last part), a VHD's file name."""
    if image.kind == "platform":
        return image.exact_version or image.version or "-"
    text = str(image).rstrip("/")
    return text.rsplit("/", 1)[-1] if image.kind == "uri" else "/".join(text.split("/")[-3::2])


def heatmap(ss: ScaleSet, items: list[Instance]) -> None:
    console().print(heatmap_table(ss.fault_domains, items))


def heatmap_table(fault_domains: int, items: list[Instance], highlight: frozenset[str] = frozenset(),
                  title: str | None = None, boxed: bool = True) -> Table:
    """Update domain rows x fault domain columns, a coloured id per instance (vmsseditor's view); a Flexible set,
    which has no update domains, gets zone rows instead.

    Beyond 100 instances a dot stands for each, at most 24 a cell; ``highlight`` ids are underlined.
    """
    flexible = bool(items) and all(i.update_domain is None for i in items)
    uds, fds = grid_shape(fault_domains, items)
    if flexible:
        zones = sorted({i.zone or "" for i in items})
        rows = [(z, f"zone {z}" if z else "no zone") for z in zones]
        row_of = {i.instance_id: i.zone or "" for i in items}
    else:
        rows = [(str(ud), f"UD{ud}") for ud in range(uds)]
        row_of = {i.instance_id: str(i.update_domain or 0) for i in items}
    cells: dict[tuple[object, int], list[Instance]] = defaultdict(list)
    for i in items:
        cells[(row_of[i.instance_id], i.fault_domain or 0)].append(i)
    title = title or ("zone x fault domain" if flexible else "update domain x fault domain")
    t = Table(title=title, title_justify="left") if boxed else \
        Table(box=None, pad_edge=False, show_edge=False, title=title, title_justify="left")
    t.add_column("")
    for fd in range(fds):
        t.add_column(f"FD{fd}", overflow="fold")
    small = len(items) <= 100
    for key, label in rows:
        row = []
        for fd in range(fds):
            text = Text()
            here = cells.get((key, fd), [])
            for inst in here[:24]:
                style = state_of(inst)[1] + (" underline" if inst.instance_id in highlight else "")
                text.append(f"{inst.instance_id} " if small else "●", style=style)
            if len(here) > 24:
                text.append(f"+{len(here) - 24}")
            row.append(text)
        t.add_row(label, *row)
    if boxed:
        t.caption = "  ".join(f"[{colour}]{label}[/]" for label, colour in COLOURS.items())
    return t


def message(output: str, text: str, obj: dict) -> None:
    if output == "json":
        print(json.dumps(obj))
    else:
        console().print(text)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def plan(prepared, output: str) -> None:
    """The plan shown before the first write (and all of ``--dry-run``)."""
    if output == "json":
        print(json.dumps({"type": "plan", **prepared.to_json()}))
        return
    c = console()
    for line in plan_lines(prepared):
        c.print(line)


def plan_lines(prepared) -> list[str]:
    """The plan as lines with rich markup: printed by the CLI, shown plain in the dashboard's confirmation."""
    ss, pol, p = prepared.scale_set, prepared.policy, prepared.plan
    out = [f"[bold]Upgrade plan[/] for {ss.resource_group}/{ss.name} ({len(prepared.instances)} instances, "
           f"upgrade policy {ss.upgrade_mode})"]
    if prepared.resume:
        out.append(f"  resuming rollout [bold]{prepared.resume.id}[/] ({prepared.resume.state})")
    if prepared.diff:
        out.append(f"  image: {ss.image}  ->  [cyan]{prepared.target}[/]")
        out += [f"    {field}: {a} -> [cyan]{b}[/]" for field, a, b in prepared.diff]
        if prepared.image:
            out.append(f"    {prepared.image}")
    else:
        out.append(f"  image: already {ss.image} in the model; upgrading instances still behind it")
    group = {"batch": f"batches of {pol.batch_count(p.capacity)}", "update-domain": "update domain",
             "fault-domain": "fault domain", "zone": "zone"}[pol.by] if pol.strategy != "surge" else \
        f"surges of {pol.surge_count(p.capacity)} (adds that many, then retires as many)"
    if pol.strategy == "surge":
        out.append(f"  strategy: surge - add {pol.surge_count(p.capacity)} VM(s) on the new image, wait until they "
                   f"pass, then delete as many old ones; healthy never below {p.capacity}")
    if pol.strategy == "azure-rolling":
        out += azure_plan_lines(prepared)
        return out
    if pol.strategy == "blue-green":
        out += blue_green_plan_lines(prepared)
        return out
    out.append(f"  policy: by {group}" + (f", canary {pol.canary}" if pol.canary else "")
               + (f", max unavailable {p.max_unavailable}: EVERY INSTANCE MAY BE DOWN AT ONCE (floor 0)"
                  if p.floor == 0 else f", max unavailable {p.max_unavailable} (healthy floor {p.floor} of "
                  f"{p.capacity})")
               + f", max unhealthy upgraded {pol.max_unhealthy_upgraded}, health timeout "
               f"{_duration(pol.health_timeout)}" + (f", pause {_duration(pol.pause)}" if pol.pause else "")
               + f", rollback {pol.rollback}")
    from vmssctl.upgrade import health_signal

    signal = health_signal(ss, pol)
    out.append(f"  health signal: {signal}" if signal else
               "  health signal: [bold red]NONE[/] (no health signal accepted): only power and provisioning state "
               "are checked")
    if pol.windows:
        out.append(f"  batches start only in the maintenance windows (UTC): {'; '.join(pol.windows)}")
    out += [f"  behind {rule_line(r)}" for r in load_balancing(prepared.backends or [])]
    if pol.drain == "hook":
        hook = escape(pol.drain_hook or "")
        out.append(f"  drain: the drain hook takes each batch out of rotation first ('{hook}', "
                   f"VMSSCTL_DRAIN=drain), {_duration(pol.drain_timeout)} for its connections, and puts it back "
                   "once good (=readmit)" if pol.strategy != "surge" else
                   f"  drain: the drain hook takes the old VMs each batch retires out of rotation first "
                   f"('{hook}'), {_duration(pol.drain_timeout)} for their connections, then deleted")
    elif pol.drain == "appgw":
        out.append("  drain: " + ("each batch" if pol.strategy != "surge" else "the old VMs each batch retires")
                   + " out of the Application Gateways' pools first (each VM's own network configuration; the "
                   f"gateway's connection draining), {_duration(pol.drain_timeout)} for the connections, then "
                   + ("upgraded (the latest model puts them back) and Healthy again before the next"
                      if pol.strategy != "surge" else "deleted"))
    elif pol.drain == "lb" and not ss.lb_pools:
        out.append("  drain: [yellow]the set names no load balancer pool[/]: nothing to drain")
    elif pol.drain == "lb" and pol.strategy == "surge":
        out.append("  drain: new VMs count once the load balancers see them Up; the old ones each batch retires go "
                   f"out of rotation first (admin state Down), {_duration(pol.drain_timeout)} for their connections, "
                   "then deleted")
    elif pol.drain == "lb":
        out.append("  drain: each batch out of the set's load balancers first (admin state Down), "
                   f"{_duration(pol.drain_timeout)} for its connections, readmitted and Up again before the next")
    elif ss.gateway_pools and not ss.lb_pools:
        out.append("  drain: none (an Application Gateway has no admin state: --drain appgw takes VMs out of its "
                   "pools first, --drain hook by a command of yours)")
    elif ss.lb_pools:
        out.append("  drain: none (requests in flight on a stopping VM fail; the load balancer's probe notices "
                   "after its interval x threshold)")
    if pol.strategy == "surge" and prepared.quota:
        out.append(f"  quota: {prepared.quota}")
    if pol.strategy == "surge":
        out.append(f"  {len(p.batches)} batch(es), {p.pending} instance(s) replaced; each: scale out, wait for the "
                   "new VMs (ProvisioningState/succeeded + running + healthy + gates), delete as many old ones, "
                   "chosen then to keep zones, fault and update domains even (the lists below are what each batch "
                   "replaces in number, not who goes first)")
    else:
        out.append(f"  {len(p.batches)} batch(es), {p.pending} instance(s); each: stop, OS disk replaced from the "
                   "new image, boot, wait for ProvisioningState/succeeded + running + latest model + healthy")
    for n, batch in enumerate(p.batches[:50], 1):
        label = " (canary)" if n == 1 and pol.canary and not (prepared.resume and prepared.resume.canary_done) else ""
        more = f" ... (+{len(batch) - 30})" if len(batch) > 30 else ""
        out.append(f"    {n:>3}{label}: " + ", ".join(batch[:30]) + more)
    if len(p.batches) > 50:
        out.append(f"    ... {len(p.batches) - 50} more batches")
    if prepared.protected:
        out.append(f"  protected (their protection policy; left alone, still on the old image): "
                   f"{', '.join(prepared.protected[:30])}" + (" ..." if len(prepared.protected) > 30 else ""))
    if p.skipped:
        out.append(f"  skipped (already on the latest model): {', '.join(p.skipped[:30])}"
                   + (" ..." if len(p.skipped) > 30 else ""))
    out.append(f"  estimate: ~{_duration(prepared.estimate_seconds())} ({prepared.estimate_basis}"
               + (" plus pauses" if pol.pause else "")
               + ("; simulated time on the emulator)" if prepared.simulated else ")"))
    return out


def blue_green_plan_lines(prepared) -> list[str]:
    """Blue/green: a new set beside this one, traffic moved by draining this one, which is kept for the bake."""
    from vmssctl.rollout.strategies.blue_green import green_name
    from vmssctl.upgrade import health_signal

    ss, pol = prepared.scale_set, prepared.policy
    blue, green = ss.name, green_name(ss.name, prepared.target)
    size = pol.green_capacity or len(prepared.instances)
    signal = health_signal(ss, pol)
    fronted = (pol.drain == "lb" and ss.lb_pools) or (pol.drain == "appgw" and ss.gateway_pools)
    after = "deleted" if pol.delete_blue else "scaled to 0 (its model kept: back in minutes)"
    out = [f"  strategy: blue/green - a new scale set [bold]{green}[/] of {size} {ss.vm_size} VM(s) on the new image "
           f"beside {blue} (its model: every profile, extension, zones, the same pools), tagged as this rollout's; "
           f"{blue}'s model is not changed",
           "  green is ready once every VM is healthy" + (", passes the gates" if pol.all_gates() else "")
           + (" and is Up in the load balancers" if fronted else "") + f", within {_duration(pol.health_timeout)};"
           " a green that fails is drained and deleted (blue never stops serving)",
           f"  health signal: {signal}" if signal else "  health signal: [bold red]NONE[/] (no health signal "
           "accepted): only power and provisioning state are checked"]
    out += [f"  behind {rule_line(r)}" for r in load_balancing(prepared.backends or [])]
    if pol.green_weight is not None:
        out.append(f"  green weight: only {max(1, pol.green_weight.of(size))} of green's {size} VM(s) admitted first "
                   f"(the others held Down by admin state) for {_duration(max(pol.pause, pol.poll))}, judged by the "
                   "gates, then all of them")
    why = "--drain none" if pol.drain == "none" else "the set names no load balancer pool"
    how = "the Application Gateways' pools (each VM's own network configuration; the gateway's connection " \
        "draining" if pol.drain == "appgw" else "the load balancers (admin state Down"
    out.append(f"  switch: {blue}'s VMs out of {how}, {_duration(pol.drain_timeout)} for their connections)"
               if fronted else
               f"  switch: [yellow]no load balancer drain[/] ({why}): green serves beside {blue} until {blue} goes")
    out.append(f"  bake: {_duration(max(pol.bake, pol.drain_timeout if fronted else 0))} with {blue} "
               + ("drained but running" if fronted else "running")
               + f" (a rollback readmits it in seconds), then {blue} {after}")
    if prepared.quota:
        out.append(f"  quota: {prepared.quota}")
    out.append(f"  cost: {size} more VM(s) while both sets run; rollback {pol.rollback}: before {blue} goes, it is "
               "readmitted and green drained and deleted"
               + ("" if pol.delete_blue else f"; after, {blue} is scaled back first"))
    out.append(f"  estimate: ~{_duration(prepared.estimate_seconds())} (a typical 4 min for green, then the bake"
               + ("; simulated time on the emulator)" if prepared.simulated else ")"))
    return out


def azure_plan_lines(prepared) -> list[str]:
    """A Rolling or Automatic set: vmssctl changes the model, Azure upgrades, vmssctl watches and gates."""
    ss, pol, p = prepared.scale_set, prepared.policy, prepared.plan
    from vmssctl.upgrade import health_signal

    signal = health_signal(ss, pol)
    automatic = ss.upgrade_mode.lower() == "automatic"
    out = [f"  strategy: Azure's own {'automatic' if automatic else 'rolling'} upgrade - vmssctl changes the model "
           "(If-Match), Azure upgrades the instances, vmssctl watches each batch and applies its gates; a failed "
           "gate " + ("stops it" if automatic else "cancels Azure's rolling upgrade")
           + (" and puts the previous image back" if pol.rollback == "auto" else "")]
    if automatic:
        out.append("  [bold red]EVERY INSTANCE IS UPGRADED AT ONCE[/] (upgrade policy Automatic, --allow-automatic): "
                   "the set serves nothing until they are back (floor 0)")
    else:
        out.append(f"  Azure's batches: {ss.rolling_batch_percent or 20} % = {p.max_unavailable} instance(s) at a time"
                   + (", new VMs created first (maxSurge): healthy never below the capacity" if ss.rolling_max_surge
                      else f" (healthy floor {p.floor} of {p.capacity})"))
    out.append(f"  health signal: {signal}" if signal else "  health signal: [bold red]NONE[/]")
    out.append(f"  {len(p.batches)} batch(es), {p.pending} instance(s); gates: "
               + (", ".join(g.get("kind", "gate") for g in pol.all_gates()) or "none beyond Azure's own health checks")
               + f"; health timeout {_duration(pol.health_timeout)}, rollback {pol.rollback}")
    if prepared.protected:
        out.append(f"  protected (Azure passes over them): {', '.join(prepared.protected[:30])}")
    return out


def rollouts(items: list, output: str) -> None:
    if output == "json":
        print(json.dumps([r.to_json() for r in items], indent=2, default=str))
        return
    # the id every other command needs is never cut, at any width; names and images fold rather than end in "…"
    t = Table(Column("id", no_wrap=True), Column("scale set", overflow="fold"), "state", "phase",
              Column("target", overflow="fold"), "started", "error")
    for r in items:
        t.add_row(r.id, f"{r.resource_group}/{r.name}", r.state, r.phase, str(ImageRef(**r.target)),
                  datetime.fromtimestamp(r.created).strftime("%Y-%m-%d %H:%M"), (r.error or "")[:60])
    console().print(t)


def rollout_status(r, batches: list, events: list, output: str) -> None:
    if output == "json":
        rollout = r.to_json()
        progress = rollout.pop("progress")
        print(json.dumps({"rollout": rollout, "progress": progress, "batches": [b.__dict__ for b in batches],
                          "events": events}, indent=2, default=str))
        return
    from vmssctl.rollout.events import describe
    from vmssctl.rollout.progress import Progress, summary

    c = console()
    c.print(f"[bold]{r.id}[/] {r.resource_group}/{r.name}: [bold]{r.state}[/] ({r.phase})")
    c.print(f"  {ImageRef(**r.previous)} -> {ImageRef(**r.target)}")
    if r.progress:  # (as the rollout stands now: the last progress was stored while it ran)
        c.print(f"  {summary(replace(Progress.from_json(r.progress), state=r.state))}", highlight=False)
    if r.error:
        c.print(f"  [red]{r.error}[/]")
    t = Table("batch", "kind", "state", "instances", "failed")
    for b in batches:
        t.add_row(str(b.seq), b.kind, b.state, ", ".join(b.instance_ids[:20]), ", ".join(b.failed))
    c.print(t)
    for e in events[-15:]:
        c.print(f"  {describe(e)}", highlight=False)


def checks(found: list, output: str) -> None:
    """``vmssctl doctor``'s lines: good, bad (and what to do), or said."""
    if output == "json":
        print(json.dumps([c.to_json() for c in found], indent=2))
        return
    console = Console(highlight=False, soft_wrap=True)  # (a check a line: the terminal wraps, not rich)
    for c in found:
        mark = {True: "[green]ok[/]  ", False: "[red]FIX[/] ", None: "[dim]--[/]  "}[c.ok]
        console.print(f"{mark} [bold]{c.name:<15}[/] {escape(c.said)}")
        if c.fix:
            console.print(f"      {'':<15} [yellow]->[/] {escape(c.fix)}")
