"""Results of the placement search: evaluated candidates and the plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dsbox.config.placement import Placement

if TYPE_CHECKING:
    from dsbox.placement.verdict import Verdict


@dataclass(frozen=True, slots=True)
class Candidate:
    """One simulated configuration: ``goodput`` req/s on ``num_gpus`` GPUs (None: it could
    not beat the best found before it, so its search stopped after one probe)."""

    label: str
    num_gpus: int
    goodput: float | None
    estimate: float = 0.0

    @property
    def per_gpu(self) -> float | None:
        return None if self.goodput is None else self.goodput / self.num_gpus


@dataclass(slots=True)
class PhasePlan:
    """Result of one search (Alg. 1, Alg. 2 or the colocated baseline)."""

    algorithm: str               # "high", "low" or "colocated"
    unit: Placement              # the simulated unit (devices of its own layout)
    unit_goodput: float          # req/s of the unit
    placement: Placement         # the whole cluster: units replicated, devices assigned
    candidates: list[Candidate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def unit_gpus(self) -> int:
        return self.unit.num_devices

    @property
    def goodput_per_gpu(self) -> float:
        return self.unit_goodput / self.unit_gpus

    @property
    def cluster_goodput(self) -> float:
        """Goodput of the whole placement: per-GPU goodput times its GPUs."""
        return self.goodput_per_gpu * self.placement.num_devices


@dataclass(slots=True)
class PlanResult:
    """What ``dsbox plan`` reports."""

    model: str
    cluster: str
    profile: str
    workload: str
    slo: str
    disaggregated: PhasePlan
    colocated: PhasePlan
    search_seconds: float
    num_simulations: int
    num_requests: int
    verdict: Verdict | None = None
    profile_note: str = ""       # e.g. that the profile is derived, and how well it lands

    @property
    def ratio(self) -> float:
        base = self.colocated.goodput_per_gpu
        return self.disaggregated.goodput_per_gpu / base if base > 0 else float("inf")

    def to_json(self) -> dict:
        d, c = self.disaggregated, self.colocated
        return {
            "model": self.model,
            "cluster": self.cluster,
            "profile": self.profile,
            "workload": self.workload,
            "slo": self.slo,
            "algorithm": d.algorithm,
            "placement": d.placement.format(),
            "unit": d.unit.format(with_devices=False),
            "goodput_per_gpu": d.goodput_per_gpu,
            "cluster_goodput": d.cluster_goodput,
            "colocated_placement": c.placement.format(),
            "colocated_unit": c.unit.format(with_devices=False),
            "colocated_goodput_per_gpu": c.goodput_per_gpu,
            "colocated_cluster_goodput": c.cluster_goodput,
            "ratio": self.ratio if c.goodput_per_gpu > 0 else None,
            "search_seconds": self.search_seconds,
            "num_simulations": self.num_simulations,
            "num_requests": self.num_requests,
            "notes": d.notes + c.notes,
            "best": self.verdict.to_json() if self.verdict is not None else None,
            "profile_note": self.profile_note,
        }
