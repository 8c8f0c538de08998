"""The one metrics report, on hand-made lifecycles whose figures are known."""

from __future__ import annotations

import math

import pytest

from dsbox.config.slo import SLO
from dsbox.metrics.lifecycle import Lifecycle
from dsbox.metrics.records import RequestRecord
from dsbox.metrics.report import Distribution, build_report, slo_attainment


def _record(rid: int, arrival: float, tokens: list[float], reason: str = "length",
            prompt: int = 10, transfer: float = 0.0) -> RequestRecord:
    first = tokens[0] if tokens else arrival + 0.01
    lc = Lifecycle(arrival=arrival, prefill_queued=arrival, prefill_start=arrival + 0.01,
                   prefill_end=first, transfer_start=first, transfer_end=first + transfer,
                   decode_queued=first, decode_start=first + transfer,
                   token_times=list(tokens), finish=tokens[-1] if tokens else first)
    return RequestRecord(rid, prompt, len(tokens), reason, lc)


def test_distribution_matches_numpy_percentiles():
    d = Distribution.of([1.0, 2.0, 3.0, 4.0])
    assert (d.count, d.mean, d.median) == (4, 2.5, 2.5)
    assert d.p90 == pytest.approx(3.7) and d.p99 == pytest.approx(3.97)
    assert d.ms()["mean"] == 2500.0
    empty = Distribution.of([])
    assert empty.count == 0 and math.isnan(empty.mean)


def test_report_figures():
    recs = [
        _record(0, 0.0, [0.1, 0.2, 0.3]),             # TTFT 0.1, TPOT 0.1
        _record(1, 1.0, [1.5, 1.7]),                  # TTFT 0.5, TPOT 0.2
        _record(2, 2.0, [2.05, 2.1, 2.15, 2.2]),      # TTFT 0.05, TPOT 0.05
        _record(3, 2.5, [2.6], reason="abort"),
        _record(4, 3.0, [], reason="error"),
    ]
    r = build_report(recs, slo=SLO(0.2, 0.15), num_gpus=2)
    assert (r.num_requests, r.num_completed, r.num_aborted, r.num_failed) == (5, 3, 1, 1)
    assert r.duration_s == pytest.approx(3.01)  # first arrival .. last finish
    assert r.ttft.mean == pytest.approx((0.1 + 0.5 + 0.05) / 3)
    assert r.tpot.median == pytest.approx(0.1)
    assert r.itl.count == 2 + 1 + 3
    assert r.e2e.mean == pytest.approx((0.3 + 0.7 + 0.2) / 3)
    assert r.output_tokens == 9 and r.prompt_tokens == 30
    # both SLOs per request: 0 and 2 meet them, 1 misses TTFT; the abort is left out, the
    # error counts as a miss
    assert r.num_met == 2
    assert r.slo_attainment == pytest.approx(2 / 4)
    assert r.goodput == pytest.approx(2 / 3.01)
    assert r.goodput_per_gpu == pytest.approx(1 / 3.01)
    assert r.breakdown.count == 3
    assert r.breakdown.prefill_queueing == pytest.approx(0.01)
    assert r.to_dict()["ttft"]["count"] == 3


def test_attainment_needs_both_slos_and_never_falls_as_slos_loosen():
    recs = [_record(i, float(i), [i + 0.05 * (i + 1), i + 0.05 * (i + 1) + 0.03 * (5 - i)])
            for i in range(5)]
    base = SLO(0.12, 0.08)
    values = [slo_attainment(recs, base.scaled(s)) for s in (0.5, 1, 1.5, 2, 4)]
    assert values == sorted(values) and values[-1] == 1.0
    # a request fast on TTFT but slow on TPOT does not count
    assert slo_attainment([_record(0, 0, [0.01, 1.0])], SLO(0.1, 0.1)) == 0.0


def test_metric_values_are_what_the_distributions_summarize():
    from dsbox.metrics.report import METRICS, metric_values

    recs = [
        _record(0, 0.0, [0.1, 0.2, 0.3]),
        _record(1, 1.0, [1.5]),                       # one token: no TPOT
        _record(2, 2.0, [2.05, 2.1], transfer=0.02),
        _record(3, 2.5, [2.6], reason="abort"),       # not completed: left out
    ]
    assert metric_values(recs, "ttft") == pytest.approx([0.1, 0.5, 0.05])
    assert metric_values(recs, "tpot") == pytest.approx([0.1, 0.05])
    assert metric_values(recs, "itl") == pytest.approx([0.1, 0.1, 0.05])
    assert metric_values(recs, "transfer") == pytest.approx([0.0, 0.0, 0.02])
    report = build_report(recs)
    for metric in METRICS:
        values = metric_values(recs, metric)
        assert getattr(report, metric) == Distribution.of(values)
    with pytest.raises(ValueError, match="unknown metric"):
        metric_values(recs, "latency")
