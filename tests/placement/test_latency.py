"""Instance step times: DistServe's fitted form, PP shares, threshold split."""

from __future__ import annotations

import pytest

from dsbox.placement.latency import InstanceLatency
from dsbox.placement.profile import StepFit
from dsbox.placement.profile_source import load_profile

FIT = StepFit((20.0, 0.1, 1e-5), (10.0, 0.001, 0.5), (4.0, 0.002, 0.8), decode_threshold=8)


def test_prefill_seconds_and_stage_share():
    lat = InstanceLatency(1, 1, FIT)
    assert lat.prefill_time_of([100, 300]) == pytest.approx(
        (20 + 0.1 * 400 + 1e-5 * (100**2 + 300**2)) / 1000)
    pp2 = InstanceLatency(1, 2, FIT)
    assert pp2.prefill_time(400, 100000) == lat.prefill_time(400, 100000)
    assert pp2.prefill_stage_time(400, 100000) == pytest.approx(lat.prefill_time(400, 100000) / 2)


def test_decode_threshold_and_pipelining():
    lat = InstanceLatency(1, 1, FIT)
    assert lat.decode_time(7, 1000) == pytest.approx((10 + 1 + 3.5) / 1000)
    assert lat.decode_time(8, 1000) == pytest.approx((4 + 2 + 6.4) / 1000)
    pp2 = InstanceLatency(1, 2, FIT)
    # two micro-batches of 5: fixed cost once per round, per-token work halved; the small
    # set applies since each micro-batch has 5 < 8 sequences
    assert pp2.decode_time(10, 2000) == pytest.approx((10 + (0.001 * 2000 + 0.5 * 10) / 2) / 1000)
    assert pp2.decode_time(1, 100) == lat.decode_time(1, 100)  # one sequence: no pipelining


def test_from_profile_engines():
    p = load_profile("a100-80g", "opt-13b")
    a = InstanceLatency.from_profile(p, 2, 1)
    b = InstanceLatency.from_profile(p, 2, 1, engine="vllm")
    assert a.fit == p.fit(2) and b.fit == p.fit(2, "vllm") and a.fit != b.fit
    with pytest.raises(ValueError):
        InstanceLatency(0, 1, FIT)
