"""Server-rendered HTML for the dashboard: the page, the heatmap grid, the rollout panel.

Plain string building with escaping: the grid for 1,000 instances renders in a few
milliseconds, and there is no template engine or front-end build to maintain.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from html import escape
from urllib.parse import quote

from vmssctl.dashboard.watch import Balancing
from vmssctl.model import STATES, Instance, ScaleSet, grid_shape
from vmssctl.rollout.events import describe
from vmssctl.rollout.journal import MOVING, Batch, Rollout
from vmssctl.rollout.progress import Progress, clock_text


def state_style() -> str:
    """The instance states' colours, from the one place they are defined (``model.STATES``)."""
    dark = {"upgrading"}  # light backgrounds get dark text
    return "<style>" + " ".join(f".s-{s.name} {{ background:{s.page};{' color:#111;' if s.name in dark else ''} }}"
                                for s in STATES) + "</style>"


def e(value: object) -> str:
    return escape(str(value), quote=True)


def instance_title(i: Instance) -> str:
    return (f"instance {i.instance_id} | UD {i.update_domain} FD {i.fault_domain}"
            + (f" zone {i.zone}" if i.zone else "")
            + f" | {i.power}, {i.provisioning}, health {i.health or 'n/a'}"
            + f" | {'latest model' if i.latest_model else 'older model'} | {i.image}"
            + (f" | {i.error}" if i.error else ""))


def grid(ss: ScaleSet | None, instances: list[Instance], error: str | None = None) -> str:
    """UD rows x FD columns (one grid per zone when the set has zones), a chip per instance."""
    out = []
    if error:
        out.append(f'<p class="error">Last refresh failed: {e(error)}</p>')
    if ss is None:
        return "".join(out)
    uds, fds = grid_shape(ss.fault_domains, instances)
    flexible = ss.orchestration_mode.lower() == "flexible"  # no update domains: one row of fault domains a zone
    if flexible:
        uds = 1
    compact = len(instances) > 200
    zones: list[str | None] = [*sorted({i.zone for i in instances if i.zone})] or [None]
    counts: defaultdict[str, int] = defaultdict(int)
    for i in instances:
        counts[i.state] += 1
    healthy = sum(1 for i in instances if i.healthy)  # what the floor and every view's "healthy" count
    out.append('<div class="summary-counts">' + " ".join(
        f'<span class="count s-{s.name}" data-state="{s.name}">{s.name} {counts[s.name]}</span>'
        for s in STATES if counts[s.name]) +
        f' <span class="total">healthy <b class="healthy">{healthy}</b> of {len(instances)} instances</span></div>')
    for zone in zones:
        cells: dict[tuple[int, int], list[str]] = defaultdict(list)
        for i in instances:
            if zone is None or i.zone == zone:
                chip = (f'<span class="vm s-{i.state}" data-id="{e(i.instance_id)}" data-ud="{i.update_domain}" '
                        f'data-fd="{i.fault_domain}" title="{e(instance_title(i))}">'
                        f'{"" if compact else e(i.instance_id)}</span>')
                cells[(i.update_domain or 0, i.fault_domain or 0)].append(chip)
        cls = "heatmap compact" if compact else "heatmap"
        zone_attr = f' data-zone="{e(zone)}"' if zone else ""
        out.append(f'<table class="{cls}"{zone_attr}>')
        if zone:
            out.append(f"<caption>zone {e(zone)}</caption>")
        corner = "" if flexible else "UD \\ FD"
        out.append(f'<tr><th class="corner">{corner}</th>' + "".join(
            f'<th class="fd" data-fd="{fd}" title="select fault domain {fd}">FD {fd}</th>' for fd in range(fds))
            + "</tr>")
        for ud in range(uds):
            row = ['<th>VMs</th>' if flexible else
                   f'<th class="ud" data-ud="{ud}" title="select update domain {ud}">UD {ud}</th>']
            for fd in range(fds):
                row.append(f'<td data-ud="{ud}" data-fd="{fd}">{"".join(cells.get((ud, fd), []))}</td>')
            out.append("<tr>" + "".join(row) + "</tr>")
        out.append("</table>")
    out.append('<div class="legend">' + "".join(
        f'<span><span class="swatch s-{s.name}"></span>{s.name} <small>({s.meaning})</small></span>' for s in STATES)
        + "</div>")
    return "".join(out)


def summary(ss: ScaleSet | None, balancing: Balancing | None = None) -> str:
    """The set's facts, and each load-balancing rule in front of it (Up, Down, admin state Down): the same
    figures as ``vmssctl show``."""
    if ss is None:
        return ""
    rows: list[tuple[str, object]] = [
        ("location", ss.location), ("capacity", ss.capacity), ("VM size", ss.vm_size), ("image", ss.image),
        ("image kind", ss.image.kind), ("upgrade policy", ss.upgrade_mode),
        ("orchestration", ss.orchestration_mode), ("provisioning", ss.provisioning_state),
        ("fault domains", ss.fault_domains), ("zones", ", ".join(ss.zones) or "-")]
    if balancing is not None:
        from vmssctl.render import load_balancing, rule_line

        rows += [("load balancing", rule_line(r)) for r in load_balancing(balancing.backends)]
        if balancing.error:
            rows.append(("load balancing", balancing.error))
    return '<table class="kv">' + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows) + "</table>"


def rollout_panel(active: Rollout | None, progress: Progress | None, events: list[dict],
                  batches: list[Batch] | None = None, controls: dict[str, str | None] | None = None) -> str:
    """The running (or last) rollout: state, batch n of m, progress, floor vs healthy, timeline, events, controls.

    The figures are the engine's own Progress (from the journal), the same ones the CLI prints. ``controls``
    says which steers can act now (``upgrade.controls``): the others are shown disabled, with why.
    """
    if active is None:
        return '<p class="muted">No rollout running on this scale set.</p>'
    out = [f'<div class="rollout" data-rollout="{e(active.id)}" data-state="{e(active.state)}" '
           f'data-active="{str(active.active).lower()}">',
           f'<p><b>{e(active.id)}</b> <span class="state st-{e(active.state)}">{e(active.state)}</span> '
           f'({e(active.phase)})</p>']
    if progress is not None:
        p = progress
        pct = 100 * p.done / max(1, p.total)
        low = " low" if p.below_floor else ""
        sim = ' <span class="sim">(simulated time)</span>' if p.simulated else ""
        out.append(f'<div class="bar{" rollback" if p.phase == "rollback" else ""}"><div style="width:{pct:.1f}%">'
                   f'</div></div>'
                   f'<p class="progress">batch <b class="batch-no">{p.batch_no}</b> of '
                   f'<b class="batches-total">{p.batches_total}</b>, '
                   f'<b class="done">{p.done}</b>/<span class="total">{p.total}</span> {p.verb}{e(p.unjudged)}; '
                   f'<span class="health{low}">healthy <b class="healthy">{p.healthy}</b>/{p.capacity} '
                   f'(floor <b class="floor">{p.floor}</b>)</span>; elapsed <span class="elapsed">'
                   f'{clock_text(p.elapsed)}</span>, eta <span class="eta">{clock_text(p.eta)}</span>{sim}</p>')
        if p.current:
            out.append(f'<p class="current">current batch: {e(", ".join(p.current[:40]))}</p>')
        out.append(timeline(p, batches or []))
    if active.error:
        out.append(f'<p class="error">{e(active.error)}</p>')
    if controls:
        out.append('<div class="controls">' + "".join(
            f'<button type="button" class="rollout-op" data-op="{op}"'
            + (f' disabled title="{e(why)}"' if why else "") + f">{op}</button>" for op, why in controls.items())
            + "</div>")
    first = max(0, len(events) - 12)  # numbered within the rollout: event 1 is its start
    out.append(f'<ol class="events" start="{first + 1}">' + "".join(
        f"<li>{e(describe(ev))}</li>" for ev in events[first:]) + "</ol>")
    out.append("</div>")
    return "".join(out)


def timeline(p: Progress, batches: list[Batch], width: int = 560, height: int = 130) -> str:
    """Healthy instances over time against the floor, each batch shaded, the ETA marked: an inline SVG."""
    points = list(p.history) or [(p.now, p.healthy)]
    t0 = min([points[0][0], *[b.started for b in batches if b.started is not None]])
    end = p.now + (p.eta or 0.0)
    span = max(1.0, end - t0)
    top = max(1, p.capacity, *[h for _, h in points])
    left, right, pad_top, pad_bottom = 34, 8, 8, 18
    plot_w, plot_h = width - left - right, height - pad_top - pad_bottom

    def x(t: float) -> float:
        return left + plot_w * (min(max(t, t0), end) - t0) / span

    def y(v: float) -> float:
        return pad_top + plot_h * (1 - v / top)

    parts = [f'<svg class="timeline" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-label="healthy instances over time against the floor">'
             f"<title>healthy {p.healthy} of {p.capacity}, floor {p.floor}</title>"]
    for b in batches:
        if b.started is None:
            continue
        stop = b.finished if b.finished is not None else p.now
        kind = "failed" if b.state == "failed" else b.kind
        parts.append(f'<rect class="batch {kind}" x="{x(b.started):.1f}" y="{pad_top}" '
                     f'width="{max(1.0, x(stop) - x(b.started)):.1f}" height="{plot_h}">'
                     f"<title>batch {b.seq} ({b.kind}, {b.state})</title></rect>")
    path = [f"M{x(points[0][0]):.1f},{y(points[0][1]):.1f}"]  # a step line: healthy holds until it changes
    path += [f"H{x(t):.1f} V{y(h):.1f}" for t, h in points[1:]]
    path.append(f"H{x(p.now):.1f}")
    parts.append(f'<path class="healthy-line" d="{" ".join(path)}"/>')
    parts.append(f'<line class="floor-line" x1="{left}" x2="{width - right}" y1="{y(p.floor):.1f}" '
                 f'y2="{y(p.floor):.1f}"/><text class="axis" x="2" y="{y(p.floor) + 4:.1f}">floor {p.floor}</text>')
    parts.append(f'<text class="axis" x="2" y="{y(top) + 8:.1f}">{top}</text>'
                 f'<text class="axis" x="2" y="{y(0):.1f}">0</text>')
    step = next((s for s in (60, 120, 300, 600, 900, 1800, 3600, 7200, 14400) if span / s <= 6), 28800)
    for k in range(int(span // step) + 1):  # the time axis: elapsed since the rollout began
        tx = x(t0 + k * step)
        parts.append(f'<line class="tick" x1="{tx:.1f}" x2="{tx:.1f}" y1="{pad_top + plot_h}" '
                     f'y2="{pad_top + plot_h + 3}"/><text class="axis" x="{tx - (0 if k == 0 else 10):.1f}" '
                     f'y="{height - 4}">{_elapsed(k * step)}</text>')
    if p.eta:
        parts.append(f'<line class="eta-line" x1="{x(end):.1f}" x2="{x(end):.1f}" y1="{pad_top}" '
                     f'y2="{pad_top + plot_h}"/><text class="axis" x="{x(end) - 24:.1f}" y="{pad_top + 8}">ETA</text>')
    parts.append(f'<line class="now-line" x1="{x(p.now):.1f}" x2="{x(p.now):.1f}" y1="{pad_top}" '
                 f'y2="{pad_top + plot_h}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _elapsed(seconds: float) -> str:
    """A time axis label: 0, 5m, 1h30m."""
    m = int(seconds // 60)
    return "0" if m == 0 else f"{m}m" if m < 60 else f"{m // 60}h{m % 60:02d}m" if m % 60 else f"{m // 60}h"


def history(rollouts: list[Rollout]) -> str:
    if not rollouts:
        return '<p class="muted">No rollouts in the journal yet.</p>'
    from datetime import datetime

    from vmssctl.model import ImageRef

    rows = "".join(
        f"<tr><td>{e(r.id)}</td><td>{e(datetime.fromtimestamp(r.created).strftime('%Y-%m-%d %H:%M'))}</td>"
        f"<td>{e(r.state)}</td><td>{e(ImageRef(**r.previous))} &rarr; {e(ImageRef(**r.target))}</td>"
        f"<td>{e(r.error or '')}</td></tr>" for r in rollouts)
    head = "<tr><th>id</th><th>started</th><th>state</th><th>image</th><th>error</th></tr>"
    return f'<table class="history">{head}{rows}</table>'


def banner(error: str | None, what: str = "Cannot reach ARM") -> str:
    """Why the page shows nothing (ARM, the emulator or the fleet database unreachable), in place of its content."""
    if not error:
        return ""
    return f'<div class="banner" role="alert">{e(what)}: {e(error)}. Retrying on the next refresh.</div>'


def set_path(sub: str, rg: str, name: str) -> str:
    """A scale set's page: its subscription is part of its identity (the same group and name can exist in two)."""
    return f"/sets/{quote(sub.lower())}/{quote(rg)}/{quote(name)}"


def picker(sets: list[tuple[str, str, str, str]], current: str | None, rg_filter: str,
           names: dict[str, str] | None = None) -> str:
    """Every scale set, by subscription (headed by its name when there are several), linked to its page."""
    groups = sorted({rg for _, rg, _, _ in sets}, key=str.lower)
    opts = "".join(f'<option value="{e(g)}"{" selected" if g == rg_filter else ""}>{e(g)}</option>' for g in groups)
    subs = list(dict.fromkeys(sub for sub, _, _, _ in sets))
    parts = []
    for sub in subs:
        links = "".join(
            f'<li class="{"current" if current and f"{s}/{rg}/{n}".lower() == current else ""}">'
            f'<a href="{set_path(s, rg, n)}" data-set="{e(f"{s}/{rg}/{n}".lower())}">{e(rg)}/<b>{e(n)}</b></a> '
            f'<small>{e(loc)}</small></li>'
            for s, rg, n, loc in sets if s == sub and (not rg_filter or rg.lower() == rg_filter.lower()))
        head = (f'<li class="sub" title="{e(sub)}">{e((names or {}).get(sub, sub))}</li>' if len(subs) > 1 else "")
        parts.append(head + links)
    return (f'<form class="filter" method="get" action="/"><label>resource group <select name="rg" '
            f'onchange="this.form.submit()"><option value="">all</option>{opts}</select></label></form>'
            f'<ul class="sets">{"".join(parts) or "<li class=muted>no scale sets</li>"}</ul>')


@dataclass(frozen=True)
class SetRow:
    """One scale set on the index: where it is, what ARM last said of it, and its rollout in flight."""

    sub: str
    rg: str
    name: str
    location: str
    scale_set: ScaleSet | None  # from the subscription's listing
    instances: list[Instance] | None  # as last read (None: not yet)
    error: str | None
    rollout: Rollout | None


def set_table(rows: list[SetRow], names: dict[str, str]) -> str:
    """Every scale set of every subscription, a row each with what the portal's list shows and what an upgrade
    needs: orchestration, upgrade policy, capacity, healthy of capacity, the model's image and how many VMs run
    it, the rollout in flight with its progress. The filter box narrows the rows in the page."""
    subs = list(dict.fromkeys(r.sub for r in rows))
    head = ("<tr><th>scale set</th><th>location</th><th>orchestration</th><th>upgrade policy</th>"
            "<th>capacity</th><th>healthy</th><th>image</th><th>on it</th><th>rollout</th></tr>")
    out = [f'<table class="sets"><thead>{head}</thead>']
    for sub in subs:
        out.append("<tbody>")
        if len(subs) > 1:
            out.append(f'<tr class="sub"><th colspan="9" title="{e(sub)}">{e(names.get(sub, sub))}</th></tr>')
        for r in (r for r in rows if r.sub == sub):
            out.append(_set_row(r))
        out.append("</tbody>")
    out.append("</table>")
    return "".join(out) if rows else '<p class="muted">No scale sets in the subscriptions this connection lists.</p>'


def _set_row(r: SetRow) -> str:
    ss, key = r.scale_set, f"{r.sub}/{r.rg}/{r.name}".lower()
    link = f'<a href="{set_path(r.sub, r.rg, r.name)}" data-set="{e(key)}">{e(r.rg)}/<b>{e(r.name)}</b></a>'
    if ss is None:
        cells = f'<td colspan="8" class="muted">{e(r.error or "no VM profile")}</td>'
    else:
        if r.instances is None or r.error:  # not read yet (or not readable): the figures follow
            healthy_cell = on_cell = f'<td class="num muted" title="{e(r.error or "reading…")}">…</td>'
        else:
            healthy = sum(1 for i in r.instances if i.healthy)
            on_it = sum(1 for i in r.instances if i.latest_model)
            low = " low" if healthy < len(r.instances) else ""
            healthy_cell = f'<td class="num health{low}" data-healthy="{healthy}">{healthy}/{len(r.instances)}</td>'
            on_cell = f'<td class="num" data-on="{on_it}">{on_it} of {len(r.instances)}</td>'
        cells = (f"<td>{e(r.location)}</td><td>{e(ss.orchestration_mode)}</td><td>{e(ss.upgrade_mode)}</td>"
                 f'<td class="num">{ss.capacity}</td>{healthy_cell}'
                 f'<td title="{e(ss.image)}">{e(ss.image.short)}</td>{on_cell}'
                 f"<td>{_rollout_cell(r.rollout)}</td>")
    text = " ".join(x for x in (r.sub, r.rg, r.name, r.location, str(ss.image) if ss else "",
                                ss.orchestration_mode if ss else "", ss.upgrade_mode if ss else "",
                                r.rollout.state if r.rollout else "") if x).lower()
    return f'<tr class="set" data-set="{e(key)}" data-text="{e(text)}"><td>{link}</td>{cells}</tr>'


def _rollout_cell(r: Rollout | None) -> str:
    if r is None:
        return '<span class="muted">-</span>'
    p = Progress.from_json(r.progress) if r.progress else None
    prog = (f" batch {p.batch_no} of {p.batches_total}, {p.done}/{p.total} {p.verb}{e(p.unjudged)}"
            if p is not None else "")
    return (f'<span class="id">{e(r.id)}</span> <span class="state st-{e(r.state)}">{e(r.state.replace("_", " "))}'
            f"</span>{prog}")


def missing_set(sub: str, rg: str, name: str, error: str | None, side: str) -> str:
    """The page of a scale set that cannot be shown: why, and nothing to act on."""
    return (f'<main class="layout"><nav class="side">{side}</nav><section class="content">'
            f'<h2>{e(rg)}/{e(name)} <small class="muted">subscription {e(sub)}</small></h2>'
            f'{banner(error or "no such scale set", "Cannot show this scale set")}</section></main>')


def page(title: str, csrf: str, body: str, scale_set: tuple[str, str, str] | None = None,
         style: str = "") -> str:
    data = (f' data-sub="{e(scale_set[0].lower())}" data-rg="{e(scale_set[1])}" data-name="{e(scale_set[2])}"'
            if scale_set else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<meta name="csrf-token" content="{e(csrf)}"><meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/app.css">{state_style()}{style}</head>
<body{data}><header><h1><a href="/">vmssctl</a> <small>dashboard</small></h1><a href="/fleets">fleets</a>
<span id="conn"></span></header>
{body}
<div id="status" role="status" aria-live="polite"></div>
<dialog id="ask"><form method="dialog"><pre class="ask-text"></pre><input class="ask-input" hidden>
<div class="buttons"><button value="cancel" class="ask-cancel">cancel</button>
<button value="ok" class="ask-ok primary">ok</button></div></form></dialog>
<script src="/static/app.js"></script></body></html>"""


def set_page(ss: ScaleSet | None, instances: list[Instance], error: str | None, side: str, panel: str,
             hist: str, subscription: str | None = None, balancing: Balancing | None = None) -> str:
    image_fields = (
        '<label>version <input name="version" placeholder="22.04.202611200 or latest"></label>'
        '<label>SKU <input name="sku"></label>'
        '<label>image id <input name="image_id" placeholder="/subscriptions/…/versions/2.0.0"></label>'
        '<label>custom URI <input name="custom_uri" placeholder="https://…/image.vhd"></label>')
    actions = "".join(f'<button type="button" class="op" data-action="{a}">{label}</button>' for a, label in (
        ("upgrade", "upgrade"), ("reimage", "reimage"), ("restart", "restart"), ("start", "start"),
        ("poweroff", "power off"), ("deallocate", "deallocate"), ("delete", "delete")))
    return f"""<main class="layout">
<nav class="side">{side}</nav>
<section class="content">
  <h2>{e(ss.resource_group) + "/" + e(ss.name) if ss else "scale set"}{
      f' <small class="muted">{e(subscription)}</small>' if subscription else ""}</h2>
  <div class="cols">
    <div id="summary">{summary(ss, balancing)}</div>
    <div class="ops">
      <h3>Selection <span id="selcount">0 selected</span></h3>
      <p class="muted">Click instances; click an FD or UD header to select it.</p>
      <div class="buttons">{actions}<button type="button" id="clear">clear</button></div>
      <form id="scale" class="inline"><label>scale to <input name="capacity" type="number" min="0" max="1000"
        value="{ss.capacity if ss else 0}"></label><button>scale</button></form>
      <form id="model" class="stack"><h3>Model</h3>{image_fields}
        <label>VM size <input name="vm_size" placeholder="{e(ss.vm_size) if ss else ""}"></label>
        <button>update model</button></form>
    </div>
  </div>
  <div id="grid">{grid(ss, instances, error)}</div>
  <div id="details" class="muted">Hover or click an instance for its details.</div>
  <div class="cols">
    <form id="rollout-form" class="stack"><h3>Start a rollout</h3>{image_fields}
      {batching_fields(ss)}
      <label>max unhealthy upgraded <input name="max_unhealthy_upgraded" placeholder="0"></label>
      <label>health timeout <input name="health_timeout" placeholder="10m"></label>
      <label>rollback <select name="rollback"><option>auto</option><option>manual</option></select></label>
      <label class="check"><input name="no_health_signal" type="checkbox"> no health signal (only power and
        provisioning state are checked)</label>
      <button>start rollout</button></form>
    <div><h3>Rollout</h3><div id="rollout">{panel}</div></div>
  </div>
  <h3>History</h3><div id="history">{hist}</div>
</section></main>"""


def batching_fields(ss) -> str:
    """The rollout form's batching fields; on a Rolling or Automatic set Azure's own upgrade decides the batches,
    so the form says so instead (and asks for consent to an Automatic set's all-at-once upgrade)."""
    mode = (ss.upgrade_mode if ss is not None else "Manual").lower()
    if mode == "rolling":
        surge = ", new VMs first (maxSurge)" if ss.rolling_max_surge else ""
        return ('<p class="muted">Upgrade policy Rolling: Azure&#39;s rolling upgrade takes '
                f"{ss.rolling_batch_percent or 20} % at a time{surge}; vmssctl changes the model, watches each "
                "batch and applies its gates.</p>")
    if mode == "automatic":
        return ('<p class="muted">Upgrade policy Automatic: Azure upgrades every instance at once.</p>'
                '<label class="check"><input name="allow_automatic" type="checkbox"> allow Azure to upgrade every '
                "instance at once (an outage)</label>")
    return """<label>by <select name="by"><option>batch</option><option>update-domain</option>
        <option>fault-domain</option><option>zone</option></select></label>
      <label>strategy <select name="strategy"><option>in-place</option><option>surge</option>
        <option>blue-green</option></select></label>
      <label>max surge <input name="max_surge" placeholder="batch size"></label>
      <label>bake (blue-green) <input name="bake" placeholder="10m"></label>
      <label>drain <select name="drain"><option value="auto">auto (lb when a probed rule fronts the set)</option>
        <option>lb</option><option>none</option></select></label>
      <label>drain timeout <input name="drain_timeout" placeholder="30s"></label>
      <label>batch size <input name="batch_size" type="number" min="1"></label>
      <label>batch % <input name="batch_percent" type="number" min="1" max="100"></label>
      <label>canary <input name="canary" type="number" min="0" value="1"></label>
      <label>pause <input name="pause" placeholder="30s"></label>
      <label>max unavailable <input name="max_unavailable" placeholder="20%"></label>"""


def fleet_style() -> str:
    """The fleet states' colours, from the one place they are defined (``fleet/view.py``)."""
    from vmssctl.fleet.view import FLEET_COLOURS, SET_COLOURS

    rules = [f".f-{k} {{ background:{bg}; color:{fg}; }}" for k, (bg, fg) in SET_COLOURS.items()]
    rules += [f".fleet-state.fs-{k.replace(' ', '_')} {{ background:{bg}; color:{fg}; }}"
              for k, (bg, fg) in FLEET_COLOURS.items()]
    return "<style>" + "\n".join(rules) + "</style>"


def _fleet_state(fv) -> str:
    return (f'<span class="fleet-state fs-{e(fv.state.replace(" ", "_"))}" data-state="{e(fv.state)}">'
            f"{e(fv.state)}</span>")


def fleet_list(fleets: list, error: str | None) -> str:
    """The fleet runs of the fleet database, each with its state (the same FleetView its page shows)."""
    if error:
        return f'<p class="muted">{e(error)}</p>'
    rows = "".join(f'<li data-fleet="{e(f.fleet)}"><a href="/fleets/{quote(f.fleet)}">{e(f.name or f.fleet)}</a> '
                   f'{_fleet_state(f)}<br><small>{e(f.fleet)}</small></li>' for f in fleets)
    return f'<ul class="sets fleets">{rows or "<li class=muted>no fleets yet</li>"}</ul>'


def _counts(fv) -> str:
    return " ".join(f'<span class="count f-{s}" data-count="{s}">{s.replace("_", " ")} {n}</span>'
                    for s, n in fv.counts.items() if n)


def fleet_table(fleets: list) -> str:
    """Every fleet run with its headline and counts (vmssctl fleet run FILE starts one)."""
    if not fleets:
        return '<p class="muted">No fleet yet: vmssctl fleet run FILE starts one.</p>'
    rows = "".join(f'<tr data-fleet="{e(f.fleet)}"><td><a href="/fleets/{quote(f.fleet)}">{e(f.name)}</a><br>'
                   f'<small>{e(f.fleet)}</small></td><td>{_fleet_state(f)} '
                   f'{e(f.headline()) if f.headline() != f.state else ""}</td><td class="counts">{_counts(f)}</td></tr>'
                   for f in fleets)
    return f'<table class="history fleets"><tr><th>fleet</th><th>state</th><th>sets</th></tr>{rows}</table>'


def fleet_page(fv, several_subscriptions: bool = False) -> str:
    """The fleet as it stands (its FleetView): state and headline, what it waits for (with Approve and Reject),
    stages in order, each set a tile coloured by its state with its rollout's progress; a tile opens the set."""
    from vmssctl.fleet.view import SET_HELP, SET_STATES

    out = [f'<h2>fleet {e(fv.name or fv.fleet)} <small>{e(fv.fleet)}</small> {_fleet_state(fv)}</h2>',
           f'<p class="headline">{e(fv.headline())}</p>', f'<div class="summary-counts">{_counts(fv)}</div>']
    if fv.waiting:
        stage = fv.waiting["stage"]
        when = "before it starts" if fv.waiting.get("when") == "before" else "after its bake"
        out.append(f'<div class="approval" data-stage="{e(stage)}"><p>Stage <b>{e(stage)}</b> waits for your approval '
                   f'{when}.</p><button type="button" class="fleet-op" data-op="approve" data-fleet="{e(fv.fleet)}" '
                   f'data-stage="{e(stage)}">Approve</button> <button type="button" class="fleet-op" data-op="reject" '
                   f'data-fleet="{e(fv.fleet)}" data-stage="{e(stage)}">Reject…</button></div>')
    if (fv.reason and fv.state in ("halted", "failed", "aborted", "cancelled")) or fv.rollback_failed:
        out.append(f'<div class="banner" role="alert">{e(fv.headline())}</div>')
    for n, st in enumerate(fv.stages, 1):
        tiles = []
        for v in fv.sets:
            if v.stage != st.name:
                continue
            p = v.progress if v.state in MOVING else None
            prog = (f'<small class="prog">{p.get("done")}/{p.get("total")} &middot; batch {p.get("batch_no")}/'
                    f'{p.get("batches_total")}</small>' if p else "")
            title = f"{v.key}: {v.state}" + (f" ({v.rollout})" if v.rollout else "") + (f" - {v.error}" if v.error
                                                                                         else "")
            tiles.append(f'<a class="tile f-{v.state}" data-set="{e(v.key)}" data-state="{v.state}" '
                         f'href="{set_path(v.subscription, v.resource_group, v.name)}" title="{e(title)}">'
                         f'{e(fv.label(v))}{prog}</a>')
        notes = ", ".join(x for x in (
            f"{st.concurrency} at a time", f"bake {st.bake:.0f}s" if st.bake else "",
            "approval before" if st.approve else "", "approval after" if st.approve_after else "",
            *[f"approved by {a.get('by')}" for a in st.approvals]) if x)
        out.append(f'<section class="stage" data-stage="{e(st.name)}" data-state="{st.state}"><h3>{n}. {e(st.name)} '
                   f'<small>{e(st.state)} &middot; {e(notes)}</small></h3><div class="tiles">{"".join(tiles)}</div>'
                   "</section>")
    out.append('<div class="legend">' + "".join(f'<span title="{e(SET_HELP[s])}"><span class="swatch f-{s}"></span>'
                                                 f'{s.replace("_", " ")}</span>' for s in SET_STATES) + "</div>")
    return "".join(out)
