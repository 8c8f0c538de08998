"""Which placements a bench runs: ``--placement auto|TEXT`` (repeatable), and with
``--compare colocated`` each one's counterpart in the other mode on as many devices beside
it: the colocated placement of a disaggregated one, and a disaggregated split of a colocated
one (``auto`` may choose colocated serving: the comparison is still both modes).

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


def disaggregated_twin(text: str) -> str | None:
    """A disaggregated placement of as many devices as the colocated ``text``: its replicas
    split between prefill and decode (the extra one prefills), or with one replica its
    stages (PP) or else its TP ranks halved between a prefill and a decode instance; None
    when ``text`` is disaggregated already or cannot be split (one device)."""
    placement = Placement.parse(text)
    if placement.disaggregated or len(placement.instances) != 1:
        return None
    inst = placement.instances[0]
    tp, pp, replicas = inst.tp, inst.pp, inst.replicas

    def side(role: str, tp: int, pp: int, n: int) -> str:
        return (f"{role}:tp={tp}" + (f",pp={pp}" if pp > 1 else "")
                + (f"*{n}" if n > 1 else ""))

    if replicas >= 2:
        prefill, decode = (replicas + 1) // 2, replicas // 2
        return f"{side('prefill', tp, pp, prefill)};{side('decode', tp, pp, decode)}"
    if pp % 2 == 0:
        tp, pp = tp, pp // 2
    elif tp % 2 == 0:
        tp = tp // 2
    else:
        return None
    return f"{side('prefill', tp, pp, 1)};{side('decode', tp, pp, 1)}"


def counterpart(text: str) -> str | None:
    """``text``'s twin in the other mode on as many devices (None: there is none)."""
    return colocated_twin(text) or disaggregated_twin(text)


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
            twin = counterpart(canonical)
            if twin is not None:
                mode = "colocated" if twin.startswith("colocated") else "disaggregated"
                out.setdefault(twin, BenchPlacement(
                    twin, f"--compare colocated: {mode} on as many devices as {canonical}"))
    return list(out.values())
