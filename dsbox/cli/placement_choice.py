"""``--placement auto|TEXT`` for ``run``, ``serve`` and ``bench``: which placement, and why.

A placement given as text is used as it is. ``auto`` (the default) asks the planner for the
best of disaggregated and colocated serving when a latency profile exists for this model
on this device; without one it follows the documented default rule: one prefill and one
decode worker where the machine has at least two devices (GPUs, or CPU cores on a machine
without a GPU), else one colocated instance. The choice carries one sentence saying which
rule chose it, which the front ends show.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsbox.config import ModelSpec
from dsbox.config.placement import Placement
from dsbox.devices import Devices

AUTO = "auto"
DEFAULT_DISAGGREGATED = "prefill:tp=1;decode:tp=1"
DEFAULT_COLOCATED = "colocated:tp=1"


@dataclass(frozen=True, slots=True)
class PlacementChoice:
    placement: str          # text form (devices assigned in order when not given)
    rule: str               # one sentence: what chose it and why


def choose_placement(text: str | None, spec: ModelSpec, devices: Devices) -> PlacementChoice:
    """The placement to run ``spec`` with on ``devices``; ValueError for malformed text."""
    if text is not None and text.strip().lower() != AUTO:
        Placement.parse(text)
        return PlacementChoice(text.strip(), "given with --placement")
    where = devices.name if devices.is_gpu else "this CPU"
    unit = "GPUs" if devices.is_gpu else "cores"
    if devices.count >= 2:
        return PlacementChoice(
            DEFAULT_DISAGGREGATED,
            f"default rule (no latency profile for {spec.name} on {where}): one prefill and "
            f"one decode worker, as there are {devices.count} {unit}")
    return PlacementChoice(
        DEFAULT_COLOCATED,
        f"default rule (no latency profile for {spec.name} on {where}): one colocated "
        f"instance, as there is 1 {unit[:-1]}")
