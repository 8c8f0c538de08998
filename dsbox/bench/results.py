"""The results of a bench: one :class:`BenchRun` per target x placement x rate, the
goodputs, and the JSON file (``--json``) with every figure and every request's stamps.

Every figure is read from the metrics report (:func:`dsbox.metrics.report.build_report`)
of the run's records; a run keeps its records so the JSON carries the raw stamps
(``runs[].requests[]``, :meth:`RequestRecord.to_dict`, seconds from the trace's time 0)
from which each figure can be recomputed.
"""

from __future__ import annotations

import datetime
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from dsbox.bench.goodput import GoodputResult
from dsbox.config import SLO
from dsbox.metrics.records import RequestRecord
from dsbox.metrics.report import MetricsReport, build_report

JSON_FORMAT = "dsbox-bench/1"


def run_label(target: str, placement: str, rate: float | None) -> str:
    """``real · prefill:tp=1;decode:tp=1 · 2 req/s``"""
    shown = "as recorded" if rate is None else f"{rate:.4g} req/s"
    return f"{target} · {placement or 'endpoint'} · {shown}"


@dataclass(slots=True)
class BenchRun:
    """One replay of the trace at one rate on one target and placement."""

    target: str                  # real | simulated | endpoint
    placement: str
    num_gpus: int
    rate: float | None           # requests/s (None: a recorded trace as recorded)
    records: list[RequestRecord]
    slo: SLO
    # a real run with a profile: the engine's step times over the profile's (median)
    step_time_vs_profile: float | None = None
    report: MetricsReport = field(init=False)

    def __post_init__(self) -> None:
        self.report = build_report(self.records, slo=self.slo, num_gpus=self.num_gpus)

    @property
    def rate_per_gpu(self) -> float | None:
        return None if self.rate is None else self.rate / self.num_gpus

    @property
    def label(self) -> str:
        return run_label(self.target, self.placement, self.rate)

    def attainment_at_scale(self, scale: float) -> float:
        """SLO attainment of these records with both targets times ``scale``."""
        return build_report(self.records, slo=self.slo.scaled(scale)).slo_attainment

    def to_dict(self, slo_scales) -> dict:
        out = {"target": self.target, "placement": self.placement, "num_gpus": self.num_gpus,
               "rate": self.rate, "rate_per_gpu": self.rate_per_gpu,
               "step_time_vs_profile": self.step_time_vs_profile}
        out.update(self.report.to_dict())
        out["attainment_by_slo_scale"] = [
            {"scale": s, "slo_attainment": self.attainment_at_scale(s)} for s in slo_scales]
        out["requests"] = [r.to_dict() for r in self.records]
        return out


@dataclass(slots=True)
class BenchResult:
    """Everything a bench measured."""

    model: str
    workload: str
    slo: SLO
    num_requests: int
    seed: int
    slo_scales: tuple[float, ...]
    runs: list[BenchRun] = field(default_factory=list)
    goodputs: list[GoodputResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profile: str | None = None   # the simulator's profile (file or built-in name)
    interrupted: bool = False    # stopped by Ctrl-C: the runs that finished before it

    def series(self) -> list[tuple[str, str]]:
        """(target, placement) pairs in the order they first ran."""
        return list(dict.fromkeys((r.target, r.placement) for r in self.runs))

    def runs_of(self, target: str, placement: str) -> list[BenchRun]:
        return [r for r in self.runs if r.target == target and r.placement == placement]

    def real_vs_simulated(self) -> list[dict]:
        """Per placement and rate with both a measured and a simulated run: both
        attainments and their difference (percentage points)."""
        out = []
        for run in self.runs:
            if run.target == "simulated":
                continue
            twin = [s for s in self.runs_of("simulated", run.placement) if s.rate == run.rate]
            if not twin:
                continue
            real, sim = run.report.slo_attainment, twin[0].report.slo_attainment
            out.append({"placement": run.placement, "target": run.target, "rate": run.rate,
                        "rate_per_gpu": run.rate_per_gpu, "measured": real, "simulated": sim,
                        "difference_pp": (sim - real) * 100,
                        "step_time_vs_profile": run.step_time_vs_profile})
        return out

    def to_dict(self) -> dict:
        return {
            "format": JSON_FORMAT,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "model": self.model, "workload": self.workload, "num_requests": self.num_requests,
            "seed": self.seed, "profile": self.profile,
            "slo": {"ttft": self.slo.ttft, "tpot": self.slo.tpot,
                    "attainment": self.slo.attainment, "name": self.slo.name},
            "slo_scales": list(self.slo_scales),
            "runs": [r.to_dict(self.slo_scales) for r in self.runs],
            "goodput_per_gpu": [g.to_dict() for g in self.goodputs],
            "real_vs_simulated": self.real_vs_simulated(),
            "notes": list(self.notes),
            "interrupted": self.interrupted,
        }

    def write_json(self, path: Path) -> None:
        path = Path(path)
        if path.parent != Path(""):
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_finite(self.to_dict()), indent=1) + "\n")


def _finite(value):
    """NaN (an empty distribution) as null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
