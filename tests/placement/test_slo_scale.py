"""SLOs from the registry default or as a scale of the profile's single-request latency."""

from __future__ import annotations

import pytest

from dsbox.config.model_spec import get_model_spec
from dsbox.config.slo import SLO
from dsbox.placement.latency import InstanceLatency
from dsbox.placement.plan import resolve_slo
from dsbox.placement.profile import StepOverhead
from dsbox.placement.profile_source import load_profile
from dsbox.placement.slo_scale import scaled_slo, single_request_latencies
from dsbox.placement.workload import sample_requests, synthetic_lengths

SAMPLE = sample_requests(synthetic_lengths(500, 100, n=500), 500)


def test_scale_multiplies_one_request_alone_on_the_smallest_tp():
    prof = load_profile("a100-80g", "opt-66b")  # smallest TP there: 2
    ttft, tpot, tp = single_request_latencies(prof, SAMPLE)
    lat = InstanceLatency.from_profile(prof, 2, 1)
    prompt = round(SAMPLE.mean_prompt)
    assert tp == 2
    assert ttft == pytest.approx(lat.prefill_time(prompt, prompt * prompt))
    assert tpot == pytest.approx(lat.decode_time(1, round(SAMPLE.mean_prompt
                                                           + SAMPLE.mean_output / 2)))
    slo = scaled_slo(prof, SAMPLE, 3.0)
    assert (slo.ttft, slo.tpot) == pytest.approx((3 * ttft, 3 * tpot))
    assert slo.name.startswith("3x single-request latency")
    # the runtime's own cost of each kind of step is part of a request's latency
    prof.prefill_overhead, prof.decode_overhead = StepOverhead(3.0), StepOverhead(5.0)
    assert single_request_latencies(prof, SAMPLE)[:2] == pytest.approx((ttft + 0.003,
                                                                        tpot + 0.005))
    with pytest.raises(ValueError, match="> 0"):
        scaled_slo(prof, SAMPLE, 0.0)


def test_the_model_default_comes_from_the_registry():
    prof = load_profile("a100-80g", "opt-66b")
    for model, preset in (("opt-13b", "chatbot-13b"), ("opt-30b", "chatbot-66b"),
                          ("opt-66b", "chatbot-66b"), ("opt-175b", "chatbot-175b")):
        spec = get_model_spec(model)
        assert spec.default_slo == preset
        assert resolve_slo(spec, None, None, prof, SAMPLE) == SLO.preset(preset)
    spec = get_model_spec("opt-66b")
    assert resolve_slo(spec, "0.4,0.1", None, prof, SAMPLE).tpot == 0.1
    with pytest.raises(ValueError, match="not both"):
        resolve_slo(spec, "chatbot-66b", 2.0, prof, SAMPLE)
