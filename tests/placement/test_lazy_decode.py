"""The simulator's lazy decode path gives exactly the stamps of driving the scheduler for
every step (``fast=False``), over colocated, disaggregated, PP (several decode micro-batches
in flight), preemption and caps."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsbox.config.slo import SLO
from dsbox.placement.simulator import simulate
from tests.placement.factories import make_colocated, make_setup, make_trace

CASES = {
    "disaggregated": lambda: make_setup(num_prefill=2, num_decode=2, bandwidth=20e9),
    "decode-pp2": lambda: make_setup(decode={"pp": 2}, prefill={"pp": 2}),
    "decode-preempts": lambda: make_setup(decode={"num_blocks": 200, "block_size": 8}),
    "decode-cap": lambda: make_setup(decode={"max_num_seqs": 5}),
    "colocated": lambda: make_colocated(num=2),
    "colocated-preempts": lambda: make_colocated(num_blocks=110),
    "colocated-pp2-cap": lambda: make_colocated(pp=2, max_num_seqs=7, budget=600),
    "decode-only": lambda: make_setup(num_prefill=0, decode={"num_blocks": 300}),
    "decode-pp3-preempts": lambda: make_setup(decode={"pp": 3, "num_blocks": 200,
                                                      "block_size": 8}),
    "colocated-pp3-preempts": lambda: make_colocated(pp=3, num_blocks=110),
    "decode-only-pp4": lambda: make_setup(num_prefill=0, decode={"pp": 4, "num_blocks": 300}),
}


def _stamps(result):
    return [(lc.arrival, lc.prefill_queued, lc.prefill_start, lc.prefill_end,
             lc.transfer_start, lc.transfer_end, lc.decode_queued, lc.decode_start,
             tuple(lc.token_times), lc.finish, lc.num_preemptions)
            for lc in result.lifecycles]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_fast_path_matches_scheduler_path(case, seed):
    setup = CASES[case]()
    trace = make_trace(150, rate=10.0, seed=seed, mean_prompt=300, mean_output=70)
    exact = simulate(setup, trace, fast=False)
    fast = simulate(setup, trace, fast=True)
    assert _stamps(fast) == _stamps(exact)
    assert fast.num_steps == exact.num_steps and fast.end_time == exact.end_time
    if "preempts" in case:
        assert sum(lc.num_preemptions for lc in exact.lifecycles) > 0


@pytest.mark.parametrize("case", ["disaggregated", "colocated-preempts",
                                  "decode-pp3-preempts"])
def test_fast_path_matches_with_early_stop(case):
    setup = CASES[case]()
    trace = make_trace(200, rate=12.0, mean_prompt=300, mean_output=70)
    slo = SLO(0.5, 0.05)
    exact = simulate(setup, trace, slo, stop_early=True, fast=False)
    fast = simulate(setup, trace, slo, stop_early=True, fast=True)
    assert (fast.num_met, fast.num_violated, fast.passed) == (
        exact.num_met, exact.num_violated, exact.passed)
    assert _stamps(fast) == _stamps(exact)


@settings(max_examples=25, deadline=None)
@given(colocated=st.booleans(), blocks=st.integers(110, 600),
       block_size=st.sampled_from([4, 8, 16]), seqs=st.integers(2, 40), pp=st.integers(1, 4),
       rate=st.floats(2.0, 40.0), seed=st.integers(0, 5))
def test_fast_path_matches_on_random_setups(colocated, blocks, block_size, seqs, pp, rate,
                                             seed):
    limits = {"num_blocks": blocks * 16 // block_size, "block_size": block_size,
              "max_num_seqs": seqs, "pp": pp}
    setup = make_colocated(**limits) if colocated else make_setup(decode=limits)
    trace = make_trace(60, rate=rate, seed=seed, mean_prompt=300, mean_output=70)
    if trace.max_total_tokens > setup.min_kv_capacity():
        return
    assert _stamps(simulate(setup, trace, fast=True)) == _stamps(
        simulate(setup, trace, fast=False))
