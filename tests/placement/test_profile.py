"""Profile files: the built-in a100-80g data, JSON round trip, KV capacity, L_m."""

from __future__ import annotations

import json

import pytest

from dsbox.config.model_spec import get_model_spec
from dsbox.placement.profile import LatencyProfile, StepFit, StepOverhead, detect_token_budget
from dsbox.placement.profile_source import builtin_profiles, load_profile


def test_builtin_a100_carries_distserve_fits():
    assert builtin_profiles() == {"a100-80g": ["opt-13b", "opt-66b"]}
    p13 = load_profile("a100-80g", "opt-13b")
    assert p13.tps() == [1, 2, 4] and p13.tps("vllm") == [1, 2, 4]
    fit = p13.fit(1)  # DistServe's profiler-a100-80g.distserve.json, facebook/opt-13b, TP 1
    assert fit.prefill == (18.10254647486372, 0.1019122572698738, 7.122264314252114e-06)
    assert fit.decode_small[0] == 19.934702624895458
    assert fit.decode_large[2] == 0.15831096191764046
    assert fit.decode_threshold == 95
    assert p13.fit(2, "vllm").prefill[0] == 27.440806247810684
    p66 = load_profile("a100-80g", "facebook/opt-66b")
    assert p66.tps() == [2, 3, 4, 8]
    spec = get_model_spec("opt-66b")
    assert p66.kv_tokens(spec, 2, 1) == 11600 and p66.kv_tokens(spec, 8, 8) == 2085696
    assert "github.com/LLMServe/DistServe" in p66.provenance["repository"]
    assert p66.device_memory_bytes == 80 * 2**30 and p66.dtype == "float16"


def test_kv_capacity_from_memory_when_not_listed():
    p = load_profile("a100-80g", "opt-13b")
    spec = get_model_spec("opt-13b")
    # not in max_num_tokens.csv: computed from 90% of 80 GiB minus the weight shard
    free = p.device_memory_bytes * 0.9 - spec.weight_bytes() / 3
    assert p.kv_tokens(spec, 1, 3) == int(free // (spec.kv_bytes_per_token() / 3))
    assert p.kv_tokens(spec, 1, 2) == 163008  # listed


def test_step_fit_formulas():
    fit = StepFit((10.0, 0.5, 0.001), (5.0, 0.01, 1.0), (2.0, 0.02, 3.0), decode_threshold=4)
    assert fit.prefill_ms([10, 20]) == pytest.approx(10 + 0.5 * 30 + 0.001 * 500)
    assert fit.decode_ms(3, 100) == pytest.approx(5 + 1 + 3)        # small set below 4
    assert fit.decode_ms(4, 100) == pytest.approx(2 + 2 + 12)       # large set from 4
    with pytest.raises(ValueError):
        StepFit((1.0, 2.0), (1, 1, 1), (1, 1, 1))


def test_token_budget_detection():
    # throughput n / (a + b n): rises to 1/b; 95% of the best is reached at n = 19 a / b
    points = [(n, 50 + 1.0 * n) for n in range(100, 5001, 100)]
    best = max(n / t for n, t in points)
    lm = detect_token_budget(points)
    assert lm / (50 + lm) >= 0.95 * best
    assert (lm - 100) / (50 + lm - 100) < 0.95 * best
    assert load_profile("a100-80g", "opt-13b").token_budget(1) == 768
    with pytest.raises(ValueError):
        detect_token_budget([])


def test_json_round_trip(tmp_path):
    p = load_profile("a100-80g", "opt-13b")
    p.prefill_token_budget[1] = 512
    path = tmp_path / "sub" / "opt-13b.json"
    p.save(path)
    q = LatencyProfile.load(path)
    assert q.to_dict() == p.to_dict()
    assert load_profile(path, "opt-13b").token_budget(1) == 512
    assert load_profile(tmp_path / "sub", "opt-13b").fits == p.fits
    with pytest.raises(ValueError, match="not opt-66b|is for"):
        load_profile(path, "opt-66b")


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(format="other"), "not a dsbox-profile"),
    (lambda d: d.update(units="s"), "units"),
    (lambda d: d.pop("fits"), "missing key"),
    (lambda d: d.update(default_engine="nope"), "default engine"),
    (lambda d: d["fits"]["distserve"]["1"].update(prefill=[1, 2]), "three coefficients"),
])
def test_bad_files(tmp_path, mutate, message):
    data = load_profile("a100-80g", "opt-13b").to_dict()
    mutate(data)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        LatencyProfile.load(path)


def test_unknown_profile_lists_the_profiles_there_are(tmp_path):
    for name in ("h100-fantasy", tmp_path):
        with pytest.raises(ValueError) as err:
            load_profile(name, "opt-13b")
        message = str(err.value)
        assert "a100-80g (opt-13b, opt-66b)" in message  # measured
        assert "h100" in message and "l40s" in message  # derived for any model
        assert "dsbox profile" in message
    with pytest.raises(ValueError, match="no fit for tp=8"):
        load_profile("a100-80g", "opt-13b").fit(8)


def test_step_overhead_round_trips_and_defaults_to_zero(tmp_path):
    p = load_profile("a100-80g", "opt-13b")
    assert p.prefill_overhead == p.decode_overhead == StepOverhead(0.0, 0.0)
    p.prefill_overhead, p.decode_overhead = StepOverhead(2.0, 1e-4), StepOverhead(0.5, 0.0, 0.03)
    p.save(tmp_path / "p.json")
    q = LatencyProfile.load(tmp_path / "p.json")
    assert (q.prefill_overhead, q.decode_overhead) == (StepOverhead(2.0, 1e-4),
                                                       StepOverhead(0.5, 0.0, 0.03))
    assert q.decode_overhead.seconds(1000, 4) == pytest.approx((0.5 + 4 * 0.03) * 1e-3)
    data = p.to_dict()
    data["step_overhead"]["decode"].pop("ms_per_seq")  # a file from before the term
    assert LatencyProfile.from_dict(data).decode_overhead == StepOverhead(0.5, 0.0, 0.0)
    data["step_overhead"]["decode"]["ms"] = -1
    with pytest.raises(ValueError, match="overheads"):
        LatencyProfile.from_dict(data)
    # an older file: one overhead for every step, or none at all
    del data["step_overhead"]
    old = LatencyProfile.from_dict({**data, "step_overhead_ms": 2.0,
                                    "step_overhead_ms_per_token": 1e-4})
    assert old.prefill_overhead == old.decode_overhead == StepOverhead(2.0, 1e-4)
    assert LatencyProfile.from_dict(data).decode_overhead == StepOverhead()
