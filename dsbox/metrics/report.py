"""The one metrics report: latency distributions, SLO attainment, goodput, stage breakdown.

Every front end reads its figures from :func:`build_report` over :class:`RequestRecord`
values (the engine's finished-request log, the simulator's lifecycles, the bench's runs),
so the dashboard, the bench, the server and the simulator never disagree on a definition:

- TTFT: arrival to first token. TPOT: mean gap between tokens after the first, per request
  with at least two tokens. ITL: every gap between consecutive tokens, pooled over
  requests. E2E: arrival to finish. Queue: arrival (or re-queue) to first prefill step.
  All in seconds; ``Distribution.ms()`` gives milliseconds for printing.
- Percentiles are numpy's linear interpolation (as ``vllm bench serve`` computes them).
- SLO attainment: the share of requests that meet **both** the TTFT and the TPOT target.
  Failed requests count as missed; aborted ones (a user's cancel) are left out.
- Goodput: requests per second that met the SLO over the run's duration (vLLM's "request
  goodput"); per GPU when the number of GPUs is given. DistServe's goodput (the highest
  rate at which attainment reaches its target) is a search over such runs
  (:mod:`dsbox.placement.goodput`, the bench's sweep).
- Five-stage breakdown: the mean of each stage (prefill queueing and execution, transfer,
  decode queueing and execution) over the requests that completed every stage.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from dsbox.config.slo import SLO
from dsbox.metrics.lifecycle import Lifecycle
from dsbox.metrics.records import RequestRecord

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True, slots=True)
class Distribution:
    """Count, mean, median, p90 and p99 of a set of values (seconds; NaN when empty)."""

    count: int
    mean: float
    median: float
    p90: float
    p99: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Distribution:
        arr = np.fromiter(values, dtype=np.float64)
        if arr.size == 0:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        p50, p90, p99 = np.percentile(arr, PERCENTILES)
        return cls(int(arr.size), float(arr.mean()), float(p50), float(p90), float(p99))

    def ms(self) -> dict[str, float]:
        """mean, median, p90 and p99 in milliseconds."""
        return {k: getattr(self, k) * 1000 for k in ("mean", "median", "p90", "p99")}


@dataclass(frozen=True, slots=True)
class StageMeans:
    """Mean seconds of each of the five stages, over ``count`` requests."""

    count: int
    prefill_queueing: float
    prefill_execution: float
    transfer: float
    decode_queueing: float
    decode_execution: float

    STAGES = ("prefill_queueing", "prefill_execution", "transfer", "decode_queueing",
              "decode_execution")


@dataclass(frozen=True, slots=True)
class MetricsReport:
    """Everything a front end shows of a set of finished requests."""

    num_requests: int          # every record
    num_completed: int         # finished by stop or length
    num_failed: int            # finished with an error
    num_aborted: int
    duration_s: float
    prompt_tokens: int         # of completed requests
    output_tokens: int
    ttft: Distribution
    tpot: Distribution
    itl: Distribution
    e2e: Distribution
    queue: Distribution
    transfer: Distribution
    breakdown: StageMeans | None
    slo: SLO | None
    num_met: int | None        # requests that met both SLOs
    slo_attainment: float | None
    goodput: float | None      # requests/s that met the SLO
    num_gpus: int | None

    @property
    def request_throughput(self) -> float:
        return self.num_completed / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def output_throughput(self) -> float:
        return self.output_tokens / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def total_token_throughput(self) -> float:
        return ((self.prompt_tokens + self.output_tokens) / self.duration_s
                if self.duration_s > 0 else 0.0)

    @property
    def goodput_per_gpu(self) -> float | None:
        if self.goodput is None or not self.num_gpus:
            return None
        return self.goodput / self.num_gpus

    def to_dict(self) -> dict:
        """Plain JSON-ready values (seconds, requests/s, tokens/s)."""
        out = {
            "num_requests": self.num_requests, "num_completed": self.num_completed,
            "num_failed": self.num_failed, "num_aborted": self.num_aborted,
            "duration_s": self.duration_s, "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "request_throughput": self.request_throughput,
            "output_throughput": self.output_throughput,
            "total_token_throughput": self.total_token_throughput,
            "slo": None if self.slo is None else {"ttft": self.slo.ttft, "tpot": self.slo.tpot,
                                                  "attainment": self.slo.attainment},
            "num_met": self.num_met, "slo_attainment": self.slo_attainment,
            "goodput": self.goodput, "num_gpus": self.num_gpus,
            "goodput_per_gpu": self.goodput_per_gpu,
            "breakdown": None if self.breakdown is None else asdict(self.breakdown),
        }
        for name in METRICS:
            out[name] = asdict(getattr(self, name))
        return out


def counts_for_slo(record: RequestRecord) -> bool:
    """Whether a request enters the attainment denominator (aborted ones do not)."""
    return record.finish_reason != "abort"


def meets_slo(record: RequestRecord, slo: SLO) -> bool:
    """Completed, and both its TTFT and its TPOT within the targets."""
    lc = record.lifecycle
    return record.ok and slo.met(lc.ttft, lc.tpot)


def slo_attainment(records: Sequence[RequestRecord], slo: SLO) -> float:
    """Share of the (non-aborted) requests that met both SLOs; 0 for none."""
    judged = [r for r in records if counts_for_slo(r)]
    if not judged:
        return 0.0
    return sum(meets_slo(r, slo) for r in judged) / len(judged)


def stage_means(lifecycles: Iterable[Lifecycle]) -> StageMeans | None:
    """Mean of each of the five stages over the lifecycles that have them all."""
    parts = [b for b in (lc.breakdown() for lc in lifecycles) if b is not None]
    if not parts:
        return None
    n = len(parts)
    return StageMeans(n, *(sum(getattr(b, s) for b in parts) / n for s in StageMeans.STAGES))


METRICS = ("ttft", "tpot", "itl", "e2e", "queue", "transfer")


def metric_values(records: Iterable[RequestRecord], metric: str) -> list[float]:
    """The per-request values (seconds) a distribution of the report is taken over: of the
    completed requests, ``ttft``, ``tpot`` (requests with at least two tokens), ``e2e``,
    ``queue``, ``transfer``; ``itl`` is every gap between tokens, pooled. Plots (CDFs)
    read these, so they show exactly what the report summarizes."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    lcs = [r.lifecycle for r in records if r.ok]
    if metric == "itl":
        return [g for lc in lcs for g in lc.inter_token_latencies()]
    if metric == "tpot":
        return [lc.tpot for lc in lcs if len(lc.token_times) > 1]
    attr = {"ttft": "ttft", "e2e": "latency", "queue": "queue_time",
            "transfer": "transfer_time"}[metric]
    return [v for v in (getattr(lc, attr) for lc in lcs) if v is not None]


def run_duration(records: Sequence[RequestRecord]) -> float:
    """First arrival to last finish, seconds (0 without a finished request)."""
    finishes = [r.lifecycle.finish for r in records if r.lifecycle.finish is not None]
    if not finishes:
        return 0.0
    return max(finishes) - min(r.lifecycle.arrival for r in records)


def build_report(records: Sequence[RequestRecord], *, slo: SLO | None = None,
                 duration: float | None = None, num_gpus: int | None = None) -> MetricsReport:
    """The report of ``records``; ``duration`` defaults to first arrival .. last finish."""
    records = list(records)
    done = [r for r in records if r.ok]
    lcs = [r.lifecycle for r in done]
    if duration is None:
        duration = run_duration(records)
    num_met = attainment = goodput = None
    if slo is not None:
        num_met = sum(meets_slo(r, slo) for r in records)
        attainment = slo_attainment(records, slo)
        goodput = num_met / duration if duration > 0 else 0.0
    return MetricsReport(
        num_requests=len(records),
        num_completed=len(done),
        num_failed=sum(r.finish_reason == "error" for r in records),
        num_aborted=sum(r.finish_reason == "abort" for r in records),
        duration_s=duration,
        prompt_tokens=sum(r.num_prompt_tokens for r in done),
        output_tokens=sum(r.num_output_tokens for r in done),
        ttft=Distribution.of(metric_values(done, "ttft")),
        tpot=Distribution.of(metric_values(done, "tpot")),
        itl=Distribution.of(metric_values(done, "itl")),
        e2e=Distribution.of(metric_values(done, "e2e")),
        queue=Distribution.of(metric_values(done, "queue")),
        transfer=Distribution.of(metric_values(done, "transfer")),
        breakdown=stage_means(lcs),
        slo=slo, num_met=num_met, slo_attainment=attainment, goodput=goodput,
        num_gpus=num_gpus,
    )
