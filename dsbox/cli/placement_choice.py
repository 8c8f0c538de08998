"""``--placement auto|TEXT`` for ``run``, ``serve`` and ``bench``: which placement, and why.

A placement given as text is used as it is. ``auto`` (the default) is the model's
``placement`` in the registry (``models.toml``) when its entry gives one, else
:func:`dsbox.placement.auto.choose_placement` on this machine's devices: the planner's best
of disaggregated and colocated serving when a latency profile exists for this model on this
device (measured by ``dsbox profile``, built in, or derived for a known GPU); without one
the documented default rule: one prefill and one decode worker where the machine has at
least two devices (GPUs, or CPU cores on a machine without a GPU), else one colocated
instance. The choice carries one sentence saying which rule or plan chose it, which the
front ends show.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsbox.config import ModelSpec
from dsbox.config.placement import Placement
from dsbox.config.slo import SLO
from dsbox.devices import Devices

AUTO = "auto"


@dataclass(frozen=True, slots=True)
class PlacementChoice:
    placement: str          # text form (devices assigned in order when not given)
    rule: str               # one sentence: what chose it and why


def choose_placement(text: str | None, spec: ModelSpec, devices: Devices, *,
                     slo: SLO | str | None = None, profile=None) -> PlacementChoice:
    """The placement to run ``spec`` with on ``devices``; ValueError for malformed text."""
    if text is not None and text.strip().lower() != AUTO:
        Placement.parse(text)
        return PlacementChoice(text.strip(), "given with --placement")
    from dsbox.placement.auto import choose_placement as plan_choice

    choice = plan_choice(spec, devices.profile_key, devices.count, slo, profile)
    # a registry placement keeps its explicit device ids; a planned one is placed in order
    return PlacementChoice(choice.placement.format(choice.source == "registry"), choice.reason)
