"""The planner's answer: the better of disaggregated and colocated on the same fit, never
below the best colocated placement it evaluated, with the figures that explain it."""

from __future__ import annotations

import functools

import pytest

from dsbox.placement.plan import make_context, plan_search
from tests.placement.test_search import FAST, SHAREGPT_LIKE

CASES = {
    # (model, cluster, slo, colocated engine)
    "13b-chatbot": ("opt-13b", "1x4", "chatbot-13b", None),
    "13b-loose-tpot": ("opt-13b", "1x4", "2.5,1.0", None),
    "13b-vs-vllm": ("opt-13b", "1x4", "chatbot-13b", "vllm"),
    "66b-chatbot": ("opt-66b", "1x8", "chatbot-66b", None),
}


@functools.cache
def _result(case: str):
    model, cluster, slo, colocated_engine = CASES[case]
    ctx = make_context(model, cluster, slo, "sharegpt-like", lengths=SHAREGPT_LIKE,
                       settings=FAST)
    return plan_search(ctx, "low", colocated_engine=colocated_engine)


@pytest.mark.parametrize("case", sorted(CASES))
def test_recommendation_is_never_below_the_best_colocated_placement(case):
    colocated_engine = CASES[case][3]
    result = _result(case)
    v = result.verdict
    evaluated = [c.per_gpu for c in result.colocated.candidates if c.per_gpu is not None]
    assert evaluated and v.goodput_per_gpu >= max(evaluated)
    assert v.goodput_per_gpu >= result.colocated.goodput_per_gpu
    assert v.goodput_per_gpu == max(result.colocated.goodput_per_gpu,
                                    result.disaggregated.goodput_per_gpu)
    assert v.mode in ("colocated", "disaggregated")
    winner = result.disaggregated if v.mode == "disaggregated" else result.colocated
    assert v.placement == winner.placement and v.unit == winner.unit
    if v.mode == "disaggregated":  # it must win by more than the rate grid's step
        assert v.goodput_per_gpu > v.other_goodput_per_gpu * (1 + FAST.tolerance)
    assert v.same_fit == (colocated_engine is None)
    line = v.headline()
    assert line.startswith(f"Best: {v.mode} {v.unit.format(False)} at ")
    assert "why: " in line and "req/s/GPU" in line
    data = result.to_json()["best"]
    assert data["mode"] == v.mode and data["goodput_per_gpu"] == v.goodput_per_gpu


def test_a_loose_tpot_against_a_short_decode_step_favours_colocation():
    v = _result("13b-loose-tpot").verdict
    assert v.mode == "colocated"
    assert "TPOT target of 1000 ms" in v.reason and "still meets it" in v.reason
    assert "decode step" in v.reason and "prefill" in v.reason


def test_the_vllm_baseline_is_called_out_as_not_like_for_like():
    v = _result("13b-vs-vllm").verdict
    assert not v.same_fit and "not a like-for-like comparison" in v.reason
