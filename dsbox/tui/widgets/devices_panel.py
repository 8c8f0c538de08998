"""DevicesPanel: per GPU utilisation and memory (NVML), or the CPU's load averages and
per-core busy share where there is no GPU."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from dsbox.tui.format import gib, pct
from dsbox.tui.resources import ResourceSample

BAR_WIDTH = 10


def _bar(share: float) -> str:
    filled = max(0, min(BAR_WIDTH, round(share * BAR_WIDTH)))
    return "█" * filled + "░" * (BAR_WIDTH - filled)


def describe_resources(sample: ResourceSample) -> Text:
    text = Text()
    if sample.gpus:
        for g in sample.gpus:
            text.append(f"GPU{g.index} ", style="bold")
            text.append(f"util {_bar(g.utilization)} {pct(g.utilization):>5} · mem "
                        f"{_bar(g.memory_usage)} {gib(g.memory_used)} / {gib(g.memory_total)}"
                        f"  {g.name}\n")
        text.rstrip()
        return text
    cpu = sample.cpu
    one, five, fifteen = cpu.load_avg
    text.append("CPU ", style="bold")
    text.append(f"load {one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min, {cpu.num_cores} cores)")
    for i, busy in enumerate(cpu.core_busy):
        text.append(f"\n cpu{i} {_bar(busy)} {pct(busy):>5}")
    return text


class DevicesPanel(Static):
    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.border_title = "Devices"

    def show(self, sample: ResourceSample | None) -> None:
        if sample is not None:
            self.update(describe_resources(sample))
