"""InstancesTable: per instance, from the stats snapshot: queue depth, running batch, KV
cache usage, KV transfer rate, steps and health."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from dsbox.metrics.stats import EngineStats
from dsbox.tui.format import byte_rate, pct
from dsbox.tui.widgets.placement_panel import ROLE_STYLES


def instances_table(stats: EngineStats) -> Table:
    table = Table(expand=True, box=None, padding=(0, 1), header_style="bold")
    for name, justify in (("instance", "left"), ("queue", "right"), ("running", "right"),
                          ("KV blocks", "right"), ("KV", "right"), ("KV transfer", "right"),
                          ("steps", "right"), ("health", "left")):
        table.add_column(name, justify=justify, no_wrap=True)
    for inst in stats.instances:
        health = Text("ok", style="green") if inst.healthy \
            else Text(f"failed: {inst.error or '?'}", style="bold red")
        table.add_row(Text(f"{inst.role}{inst.instance_id}", style=ROLE_STYLES.get(inst.role,
                                                                                   "")),
                      str(inst.queue_depth), str(inst.num_running),
                      f"{inst.kv_blocks_used}/{inst.kv_blocks_total}", pct(inst.kv_usage),
                      byte_rate(inst.kv_transfer_rate), str(inst.num_steps), health)
    return table


class InstancesTable(Static):
    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.border_title = "Instances"

    def show(self, stats: EngineStats) -> None:
        self.update(instances_table(stats))
