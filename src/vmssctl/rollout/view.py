"""The live terminal view of a rollout (rich): progress, batch, heatmap, timing."""

from __future__ import annotations

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from vmssctl.render import COLOURS, heatmap_table
from vmssctl.rollout.events import Snapshot, describe
from vmssctl.rollout.progress import clock_text


def render(snap: Snapshot) -> Panel:
    p = snap.progress
    head = Text.assemble(
        (f"{p.rollout_id} ", "bold"), (f"{p.scale_set}  ", ""),
        ("ROLLING BACK " if p.phase == "rollback" else "", "bold red"),
        ("PAUSED " if p.paused else "", "bold yellow"), (f"-> {p.target}", "cyan"))
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=max(1, p.total), completed=p.done, width=40,
                            complete_style="red" if p.phase == "rollback" else "bar.complete"),
                f"{p.done}/{p.total} {p.verb}{p.unjudged}", f"batch {p.batch_no} of {p.batches_total}")
    stats = Text(f"healthy {p.healthy}/{p.capacity} (floor {p.floor})   elapsed {clock_text(p.elapsed)}   "
                 f"eta {clock_text(p.eta)}" + ("   (simulated time)" if p.simulated else ""))
    if p.below_floor:
        stats.stylize("bold red")
    legend = Text.assemble(*[(f"● {label}  ", colour) for label, colour in COLOURS.items()])
    grid = heatmap_table(snap.fault_domains, snap.instances, frozenset(p.current), None, boxed=False)
    parts: list[RenderableType] = [head, bar, stats, grid, legend]
    if p.current:
        parts.append(Text("current batch: " + ", ".join(p.current[:40]) + (" ..." if len(p.current) > 40 else "")))
    parts += [Text(line, style="dim") for line in snap.recent[-5:]]
    return Panel(Group(*parts), title="vmssctl upgrade", border_style="blue")


class LiveView:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = Live(console=console, refresh_per_second=8, transient=False)
        self.recent: list[str] = []
        self.started = False
        self.last: Snapshot | None = None

    def event(self, event: dict) -> None:
        if event["type"] == "progress":
            return
        self.recent.append(describe(event))
        if self.last is not None:
            self.last.recent = self.recent
            self.live.update(render(self.last))

    def snapshot(self, snap: Snapshot) -> None:
        snap.recent = self.recent
        self.last = snap
        if not self.started:
            self.live.start()
            self.started = True
        self.live.update(render(snap))

    def close(self) -> None:
        if self.started:
            self.live.stop()
