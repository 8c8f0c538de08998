"""Which placements a bench runs: ``--placement auto|TEXT`` (repeatable), and with
``--compare colocated`` the colocated placement of the same device count beside each.

``auto`` is :func:`dsbox.cli.placement_choice.choose_placement`'s choice for this machine,
the one ``dsbox run`` and ``dsbox serve`` make (the planner's on a profile of this machine,
else the default rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dsbox.config import ModelSpec, Placement
from dsbox.devices import Devices

COMPARE_CHOICES = ("colocated",)


@dataclass(frozen=True, slots=True)
class BenchPlacement:
    text: str       # placement text form, without device ids
    rule: str       # why it runs: "given with --placement", the auto rule, "--compare ..."

    @property
    def num_devices(self) -> int:
        return Placement.parse(self.text).num_devices


def colocated_twin(text: str) -> str | None:
    """The colocated placement of as many devices as ``text`` uses: instances of the
    largest TP in ``text`` that divides the device count, as many replicas as fit; None
    when ``text`` is colocated already."""
    placement = Placement.parse(text)
    if not placement.disaggregated:
        return None
    n = placement.num_devices
    tp = max((i.tp for i in placement.instances if n % i.tp == 0), default=1)
    replicas = n // tp
    return f"colocated:tp={tp}" + (f"*{replicas}" if replicas > 1 else "")


def bench_placements(texts: Sequence[str], spec: ModelSpec, devices: Devices,
                     compare: str | None = None, *, slo=None,
                     profile: str | None = None) -> list[BenchPlacement]:
    """The placements to run, in order, without duplicates (``auto`` plans for ``slo`` on
    ``profile`` when given). ValueError for a malformed placement or an unknown
    ``compare``."""
    from dsbox.cli.placement_choice import choose_placement

    if compare is not None and compare not in COMPARE_CHOICES:
        raise ValueError(f"--compare must be one of {', '.join(COMPARE_CHOICES)}, "
                         f"got {compare!r}")
    out: dict[str, BenchPlacement] = {}
    for text in texts or ["auto"]:
        choice = choose_placement(text, spec, devices, slo=slo, profile=profile)
        canonical = Placement.parse(choice.placement).format(with_devices=False)
        out.setdefault(canonical, BenchPlacement(canonical, choice.rule))
        if compare == "colocated":
            twin = colocated_twin(canonical)
            if twin is not None:
                out.setdefault(twin, BenchPlacement(
                    twin, f"--compare colocated: as many devices as {canonical}"))
    return list(out.values())
