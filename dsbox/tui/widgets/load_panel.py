"""LoadPanel: the load generator's workload, rate and counters, and the keys that steer it."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from dsbox.tui.format import rate
from dsbox.workloads.load_generator import LoadStatus


def describe_load(workload: str, asked_rate: float, status: LoadStatus | None,
                  note: str = "") -> Text:
    text = Text()
    text.append("load ", style="bold")
    running = status is not None and status.running and status.rate > 0
    text.append("on " if running else "off ", style="bold green" if running else "dim")
    text.append(f"{workload} at {rate(asked_rate, 'req/s')}")
    if status is not None:
        text.append(f" · {status.submitted} sent, {status.finished} finished, "
                    f"{status.in_flight} in flight, {status.dropped} dropped, "
                    f"{status.failed} failed")
    if note:
        text.append(f" · {note}", style="italic")
    return text


class LoadPanel(Static):
    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.border_title = "Load generator (F2 on/off · F3/F4 rate · F5 workload)"

    def show(self, workload: str, asked_rate: float, status: LoadStatus | None,
             note: str = "") -> None:
        self.update(describe_load(workload, asked_rate, status, note))
