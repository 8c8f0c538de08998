"""PlacementPanel: the placement drawn as devices and the instances on them (role, TP x PP,
ranks), with the rule or plan that chose it and what the machine has."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from dsbox.metrics.stats import InstanceStats

ROLE_STYLES = {"prefill": "bold yellow", "decode": "bold cyan", "colocated": "bold green"}


def draw_placement(instances: tuple[InstanceStats, ...], placement: str, rule: str,
                   machine: str) -> Text:
    """``device [instance rank] ...`` per device, then the placement text and its rule."""
    by_device: dict[str, list[tuple[InstanceStats, int]]] = {}
    for inst in instances:
        for rank, dev in enumerate(inst.devices):
            by_device.setdefault(dev, []).append((inst, rank))
    text = Text()
    text.append("placement ", style="bold")
    text.append(placement)
    text.append(f"  on {machine}\n", style="dim")
    for dev, members in by_device.items():
        text.append(f" {dev:<7}", style="bold")
        for inst, rank in members:
            text.append(" ▕", style="dim")
            text.append(f"{inst.role}{inst.instance_id}", style=ROLE_STYLES.get(inst.role, ""))
            shape = f" TP{inst.tp}×PP{inst.pp}"
            text.append(shape + (f" rank {rank}" if inst.tp * inst.pp > 1 else ""))
            text.append("▏", style="dim")
        if dev == "cpu" and len(members) > 1:
            text.append("  one process each", style="dim")
        text.append("\n")
    text.append("chosen by: ", style="dim")
    text.append(rule, style="italic")
    return text


class PlacementPanel(Static):
    """Drawn once: a placement does not change while the engine runs."""

    def __init__(self, instances: tuple[InstanceStats, ...], placement: str, rule: str,
                 machine: str, **kwargs) -> None:
        super().__init__(draw_placement(instances, placement, rule, machine), **kwargs)
        self.border_title = "Placement"
