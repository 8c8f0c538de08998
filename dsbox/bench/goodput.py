"""Per-GPU goodput of a target: the highest rate at which the SLO attainment target holds.

DistServe's goodput. From the sweep (the attainment measured at each rate): the highest
passing rate below the lowest failing one brackets it; a binary search on rate then runs
the target at the bracket's midpoint until the bracket is within ``tolerance`` or the
probes are spent. With no failing rate in the sweep the search doubles the rate first; with
no passing rate it halves it, at most ``MAX_HALVINGS`` times (a target missed even at an
eighth of the lowest rate is missed by single requests: goodput 0). Per GPU: divided by the
devices the placement uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

DEFAULT_TOLERANCE = 0.02
MAX_HALVINGS = 3


@dataclass(slots=True)
class GoodputResult:
    """The goodput of one target on one placement, and how it was found."""

    target: str
    placement: str
    num_gpus: int
    attainment_target: float
    goodput: float                      # req/s; 0 when no rate tried met the target
    upper: float | None                 # the lowest failing rate tried (None: none failed)
    probes: list[tuple[float, float]] = field(default_factory=list)  # (rate, attainment)

    @property
    def goodput_per_gpu(self) -> float:
        return self.goodput / self.num_gpus

    def to_dict(self) -> dict:
        return {"target": self.target, "placement": self.placement,
                "num_gpus": self.num_gpus, "attainment_target": self.attainment_target,
                "goodput": self.goodput, "goodput_per_gpu": self.goodput_per_gpu,
                "upper": self.upper,
                "upper_per_gpu": None if self.upper is None else self.upper / self.num_gpus,
                "probes": [{"rate": r, "slo_attainment": a} for r, a in self.probes]}


def bracket(sweep: Sequence[tuple[float, float]], target: float
            ) -> tuple[float | None, float | None]:
    """(highest passing rate below the lowest failing one, lowest failing rate)."""
    failing = [r for r, a in sweep if a < target]
    hi = min(failing) if failing else None
    passing = [r for r, a in sweep if a >= target and (hi is None or r < hi)]
    return (max(passing) if passing else None), hi


def search_goodput(sweep: Sequence[tuple[float, float]], attainment_at: Callable[[float], float],
                   target: float, max_probes: int,
                   tolerance: float = DEFAULT_TOLERANCE) -> tuple[float, float | None,
                                                                   list[tuple[float, float]]]:
    """(goodput, lowest failing rate, probes) from ``sweep`` and up to ``max_probes`` calls
    of ``attainment_at(rate)``."""
    if max_probes < 0:
        raise ValueError(f"max_probes must be >= 0, got {max_probes}")
    lo, hi = bracket(sweep, target)
    probes: list[tuple[float, float]] = []

    def probe(rate: float) -> bool:
        value = attainment_at(rate)
        probes.append((rate, value))
        return value >= target

    floor = hi / 2**MAX_HALVINGS if lo is None and hi is not None else 0.0
    while len(probes) < max_probes and (lo is None or hi is None):
        if lo is None and hi is None:
            break
        rate = hi / 2 if lo is None else lo * 2
        if rate < floor * (1 - 1e-9):
            break
        if probe(rate):
            lo = rate
        else:
            hi = rate
    while len(probes) < max_probes and lo is not None and hi is not None \
            and (hi - lo) > tolerance * lo:
        mid = (lo + hi) / 2
        if probe(mid):
            lo = mid
        else:
            hi = mid
    return (lo or 0.0), hi, probes
