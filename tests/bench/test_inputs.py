"""What a bench runs: rates, SLOs, placements and the workload's traces."""

from __future__ import annotations

import pytest

from dsbox.bench.placements import bench_placements, colocated_twin, disaggregated_twin
from dsbox.bench.rates import parse_rates
from dsbox.bench.slo import FALLBACK_PRESET, default_preset, resolve_slo
from dsbox.bench.workload import (
    BenchWorkload,
    check_fits,
    load_bench_workload,
    prompts_of,
    synthetic_prompt,
)
from dsbox.config import SLO, Placement, get_model_spec
from dsbox.devices import Devices
from dsbox.engine.model.tokenizer import bundled_tokenizer
from dsbox.workloads import Trace


def test_rates_one_list_or_sweep():
    assert parse_rates("2") == (2.0,)
    assert parse_rates("2, 1,1.5,2") == (1.0, 1.5, 2.0)
    assert parse_rates("0.5:2:0.5") == (0.5, 1.0, 1.5, 2.0)
    assert parse_rates("1:1.9:0.3") == (1.0, 1.3, 1.6, 1.9)
    for bad, needle in (("0", "rate must be > 0"), ("1,-2", "rate must be > 0"),
                        ("inf", "rate must be > 0"), ("x", "not a number"),
                        ("1:2", "START:STOP:STEP"), ("2:1:0.5", "below START"),
                        ("", "no rate"), ("0.001:100:0.001", "at most")):
        with pytest.raises(ValueError, match=needle):
            parse_rates(bad)


def test_slo_preset_default_seconds_and_scale():
    # The registry's own default, not the fallback: opt-66b's entry says chatbot-66b.
    big = get_model_spec("opt-66b")
    assert default_preset(big) == "chatbot-66b" != FALLBACK_PRESET
    assert resolve_slo(big) == SLO.preset("chatbot-66b")
    spec = get_model_spec("opt-13b")
    base = SLO.parse(default_preset(spec))
    assert resolve_slo(spec) == base
    assert resolve_slo(spec, "chatbot-66b") == SLO.preset("chatbot-66b")
    mixed = resolve_slo(spec, "chatbot-66b", tpot=0.05)
    assert (mixed.ttft, mixed.tpot) == (2.5, 0.05)
    both = resolve_slo(spec, ttft=0.4, tpot=0.1, scale=2, attainment=0.8)
    assert (both.ttft, both.tpot, both.attainment) == (0.8, 0.2, 0.8)
    with pytest.raises(ValueError, match="unknown SLO preset"):
        resolve_slo(spec, "chatbot-1t")
    with pytest.raises(ValueError, match="scale must be > 0"):
        resolve_slo(spec, scale=0)
    with pytest.raises(ValueError, match="positive number of seconds"):
        resolve_slo(spec, ttft=-1)


def test_colocated_twin_has_the_same_device_count():
    assert colocated_twin("prefill:tp=1;decode:tp=1") == "colocated:tp=1*2"
    assert colocated_twin("prefill:tp=4;decode:tp=2,pp=2") == "colocated:tp=4*2"
    assert colocated_twin("prefill:tp=2*2;decode:tp=4") == "colocated:tp=4*2"
    assert colocated_twin("prefill:tp=3;decode:tp=1") == "colocated:tp=1*4"  # 3 divides no 4
    assert colocated_twin("colocated:tp=2") is None


def test_disaggregated_twin_splits_a_colocated_placement():
    assert disaggregated_twin("colocated:tp=1*2") == "prefill:tp=1;decode:tp=1"
    assert disaggregated_twin("colocated:tp=2*3") == "prefill:tp=2*2;decode:tp=2"
    assert disaggregated_twin("colocated:tp=1,pp=2") == "prefill:tp=1;decode:tp=1"
    assert disaggregated_twin("colocated:tp=2,pp=4") == "prefill:tp=2,pp=2;decode:tp=2,pp=2"
    assert disaggregated_twin("colocated:tp=4") == "prefill:tp=2;decode:tp=2"
    assert disaggregated_twin("colocated:tp=1") is None  # one device
    assert disaggregated_twin("colocated:tp=3") is None
    assert disaggregated_twin("prefill:tp=1;decode:tp=1") is None
    for text in ("colocated:tp=1*2", "colocated:tp=2*3", "colocated:tp=2,pp=4"):
        assert Placement.parse(disaggregated_twin(text)).num_devices == \
            Placement.parse(text).num_devices


def test_placements_auto_compare_and_duplicates():
    spec = get_model_spec("opt-tiny")
    two_cores = Devices("cpu", 2, "cpu", 8 << 30)
    got = bench_placements([], spec, two_cores, "colocated")
    assert [p.text for p in got] == ["prefill:tp=1;decode:tp=1", "colocated:tp=1*2"]
    assert "default rule" in got[0].rule and "--compare" in got[1].rule
    # a colocated choice is compared with its disaggregated split
    got = bench_placements(["colocated:tp=1,pp=2"], spec, two_cores, "colocated")
    assert [p.text for p in got] == ["colocated:tp=1,pp=2", "prefill:tp=1;decode:tp=1"]
    assert "disaggregated on as many devices" in got[1].rule
    got = bench_placements(["colocated:tp=1", "auto", "colocated:tp=1 "],
                           spec, Devices("cpu", 1, "cpu", 8 << 30))
    assert [p.text for p in got] == ["colocated:tp=1"]
    with pytest.raises(ValueError):
        bench_placements(["prefill:tp=0"], spec, two_cores)
    with pytest.raises(ValueError, match="--compare must be one of"):
        bench_placements([], spec, two_cores, "vllm")


def test_every_rate_sees_the_same_requests_and_arrival_pattern():
    wl = load_bench_workload("humaneval", None, bundled_tokenizer(), num_requests=20, seed=3)
    one, three = wl.trace_at(1.0), wl.trace_at(3.0)
    assert one.prompt_lens == three.prompt_lens and one.prompts == three.prompts
    assert one.output_lens == three.output_lens and len(one) == 20
    assert three.arrivals == pytest.approx([a / 3 for a in one.arrivals])
    other = load_bench_workload("humaneval", None, bundled_tokenizer(), num_requests=20,
                                seed=4).trace_at(1.0)
    assert other.arrivals != one.arrivals


def test_recorded_trace_replays_exactly_or_scaled(tmp_path):
    path = tmp_path / "t.csv"
    Trace((0.0, 1.0, 2.0, 4.0), (5, 6, 7, 8), (2, 3, 4, 5)).write_csv(path)
    wl = load_bench_workload(None, path, None)
    assert wl.is_recorded and wl.recorded_rate() == pytest.approx(1.0)
    assert wl.trace_at(None).arrivals == (0.0, 1.0, 2.0, 4.0)
    assert wl.trace_at(2.0).arrivals == pytest.approx((0.0, 0.5, 1.0, 2.0))
    with pytest.raises(ValueError, match="has no requests"):
        BenchWorkload("empty")


def test_prompts_have_their_lengths():
    ids = synthetic_prompt(37, 5, bos=2, vocab_size=50272)
    assert len(ids) == 37 and ids[0] == 2 and all(0 <= t < 50272 for t in ids)
    assert synthetic_prompt(37, 6, 2, 50272) != ids
    trace = Trace((0.0, 0.1), (3, 4), (1, 1), ("hello", None))
    prompts = prompts_of(trace, bos=2, vocab_size=100)
    assert prompts[0] == "hello" and len(prompts[1]) == 4
    check_fits(trace, 5)
    with pytest.raises(ValueError, match="request 1 of the trace needs 4 \\+ 1 = 5"):
        check_fits(trace, 4)


def test_requests_longer_than_the_context_are_left_out():
    every = load_bench_workload("humaneval", None, bundled_tokenizer())
    short = load_bench_workload("humaneval", None, bundled_tokenizer(), max_model_len=200)
    assert every.num_left_out == 0 and short.num_left_out > 0
    assert len(short.requests) + short.num_left_out == len(every.requests)
    assert all(r.num_total_tokens <= 200 for r in short.requests)
    assert max(short.trace_at(1.0).prompt_lens) < 200
    with pytest.raises(ValueError, match="no request of workload 'humaneval' fits"):
        load_bench_workload("humaneval", None, bundled_tokenizer(), max_model_len=5)
