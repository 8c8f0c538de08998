"""A real run's step times against the profile's: the median ratio over the logged steps
of the instances the profile has a fit for."""

from __future__ import annotations

import pytest

from dsbox.bench.step_speed import predicted_ms, step_time_ratio
from dsbox.metrics.steps import PullRecord, StepRecord
from dsbox.placement.latency import InstanceLatency
from dsbox.placement.profile import LatencyProfile, StepFit, StepOverhead

FIT = StepFit((2.0, 0.01, 1e-5), (1.5, 1e-4, 0.3), (1.0, 1e-4, 0.25), 8)
PROFILE = LatencyProfile("opt-tiny", "cpu", {"dsbox": {1: FIT}}, "dsbox",
                         prefill_overhead=StepOverhead(0.5), decode_overhead=StepOverhead(
                             0.2, 0.0, 0.05))


def _step(inst: int, prefill: bool, seqs: int, tokens: int, context: int, sq: int,
          wall_ms: float) -> StepRecord:
    return StepRecord(inst, "colocated", prefill, seqs, tokens, context, sq, 100.0,
                      100.0 + wall_ms / 1e3)


def test_predicted_time_is_the_fit_plus_the_overhead_the_simulator_charges():
    lat = InstanceLatency.from_profile(PROFILE, 1, 1)
    pre = _step(0, True, 2, 300, 300, 50_000, 1.0)
    dec = _step(0, False, 10, 10, 3000, 10, 1.0)
    assert predicted_ms(lat, pre) == pytest.approx(2.0 + 3.0 + 0.5 + 0.5)
    assert predicted_ms(lat, dec) == pytest.approx(1.0 + 0.3 + 2.5 + 0.2 + 0.5)


def test_ratio_is_the_median_over_the_steps_the_profile_can_predict():
    lat = InstanceLatency.from_profile(PROFILE, 1, 1)
    shapes = [(True, 1, 128, 128, 128**2), (False, 4, 4, 900, 4), (False, 16, 16, 4000, 16),
              (False, 32, 32, 9000, 32), (True, 3, 600, 600, 120_000)]
    factors = [1.5, 1.4, 1.5, 1.6, 3.0]  # one outlier: the median holds
    steps = []
    for (prefill, seqs, tokens, ctx, sq), f in zip(shapes, factors, strict=True):
        probe = _step(0, prefill, seqs, tokens, ctx, sq, 1.0)
        steps.append(_step(0, prefill, seqs, tokens, ctx, sq, f * predicted_ms(lat, probe)))
    steps.append(_step(1, False, 8, 8, 800, 8, 500.0))  # an instance of TP 4: no fit
    steps.append(_step(2, False, 8, 8, 800, 8, 500.0))  # not PP 1: not in tp_of
    assert step_time_ratio(steps, {0: 1, 1: 4}, PROFILE) == pytest.approx(1.5)
    assert step_time_ratio(steps[-2:], {0: 1, 1: 4}, PROFILE) is None
    assert step_time_ratio([], {0: 1}, PROFILE) is None


def test_interference_beside_and_pulls_inside_a_step_count_as_the_simulator_charges_them():
    """Instance 1 (decode, interference 0.1) runs a 20 ms step while instance 0's 10 ms
    prefill runs beside it, and copies in 2 ms of KV inside it: predicted is the fit,
    the overhead and 0.1 x 10 ms; measured loses the pull."""
    profile = LatencyProfile("opt-tiny", "cpu", {"dsbox": {1: FIT}}, "dsbox",
                             prefill_overhead=StepOverhead(0.5),
                             decode_overhead=StepOverhead(0.2, 0.0, 0.05, 0.1))
    lat = InstanceLatency.from_profile(profile, 1, 1)
    dec = StepRecord(1, "decode", False, 10, 10, 3000, 10, 100.0, 100.020)
    pre = StepRecord(0, "prefill", True, 1, 128, 128, 128**2, 100.005, 100.015)
    assert predicted_ms(lat, dec, 10.0) == pytest.approx(predicted_ms(lat, dec) + 1.0)
    pull = PullRecord(1, 0, 128, 1000, 100.0, 100.001, 100.003)
    want = (20.0 - 2.0) / predicted_ms(lat, dec, 10.0)
    assert step_time_ratio([dec, pre], {1: 1}, profile, pulls=[pull]) == pytest.approx(want)
    assert step_time_ratio([dec], {1: 1}, profile) == pytest.approx(20.0 / predicted_ms(lat, dec))
