"""The live terminal view of a rollout (rich): progress, batch, heatmap, timing."""

from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from vmssctl.render import heatmap_table
from vmssctl.rollout.events import Snapshot, describe


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def render(snap: Snapshot) -> Panel:
    head = Text.assemble(
        (f"{snap.rollout_id} ", "bold"), (f"{snap.scale_set}  ", ""),
        ("ROLLING BACK " if snap.phase == "rollback" else "", "bold red"),
        ("PAUSED " if snap.paused else "", "bold yellow"), (f"-> {snap.target}", "cyan"))
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=max(1, snap.total), completed=snap.done, width=40),
                f"{snap.done}/{snap.total} upgraded", f"batch {snap.batch_no}/{snap.batches_total}")
    stats = Text(f"healthy {snap.healthy}/{len(snap.instances)} (floor {snap.floor})   "
                 f"elapsed {_clock(snap.now - snap.started)}   eta {_clock(snap.eta)}")
    if snap.healthy < snap.floor:
        stats.stylize("bold red")
    legend = Text.assemble(*[(f"● {label}  ", colour) for label, colour in (
        ("healthy", "green"), ("outdated", "blue"), ("upgrading", "yellow"), ("initializing", "cyan"),
        ("unhealthy", "red"), ("stopped", "dark_orange"), ("deallocated", "grey50"))])
    grid = heatmap_table(snap.fault_domains, snap.instances, frozenset(snap.batch), "UD x FD", boxed=False)
    parts = [head, bar, stats, grid, legend]
    if snap.batch:
        parts.append(Text("current batch: " + ", ".join(snap.batch[:40]) + (" ..." if len(snap.batch) > 40 else "")))
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
