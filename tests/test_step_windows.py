"""What ran beside each logged step: other instances' steps and the instance's own KV
pulls, checked against a direct sum over every pair of windows."""

from __future__ import annotations

import random

import numpy as np
import pytest

from dsbox.metrics.step_windows import covered_ms, step_windows
from dsbox.metrics.steps import PullRecord, StepRecord


def _pairwise_ms(windows, others):
    return [sum(max(0.0, min(e, oe) - max(s, os_)) for os_, oe in others) * 1e3
            for s, e in windows]


def test_covered_time_matches_the_sum_over_every_pair():
    rng = random.Random(7)
    t0 = 86_400.0  # monotonic clocks are large: the sums must not lose the ms
    for _ in range(50):
        windows = [(t0 + (a := rng.uniform(0, 1)), t0 + a + rng.uniform(0, 0.05))
                   for _ in range(rng.randint(0, 30))]
        others = [(t0 + (a := rng.uniform(-0.1, 1.1)), t0 + a + rng.uniform(0, 0.2))
                  for _ in range(rng.randint(0, 30))]  # overlapping each other too
        starts, ends = (np.array([w[i] for w in windows]) for i in (0, 1))
        o_starts, o_ends = (np.array([w[i] for w in others]) for i in (0, 1))
        got = covered_ms(starts, ends, o_starts, o_ends)
        assert got.tolist() == pytest.approx(_pairwise_ms(windows, others), abs=1e-6)


def test_touching_and_disjoint_windows_cover_nothing():
    got = covered_ms(np.array([1.0, 3.0]), np.array([2.0, 4.0]),
                     np.array([2.0, 0.0, 4.0]), np.array([3.0, 1.0, 5.0]))
    assert got.tolist() == [0.0, 0.0]


def test_steps_see_other_instances_and_their_own_pulls():
    """Instance 0 runs two steps, instance 1 one across both; instance 1's pull falls in
    its own step and in instance 0's second, but counts only for its own."""
    steps = [StepRecord(0, "prefill", True, 1, 10, 10, 100, 10.000, 10.010),
             StepRecord(0, "prefill", True, 1, 10, 10, 100, 10.010, 10.030),
             StepRecord(1, "decode", False, 1, 1, 20, 1, 10.005, 10.025)]
    pulls = [PullRecord(1, 0, 10, 100, 10.0, 10.015, 10.018)]
    got = step_windows(steps, pulls)
    assert got.overlap_ms == pytest.approx((5.0, 15.0, 20.0))
    assert got.pulled_ms == pytest.approx((0.0, 0.0, 3.0))
    assert step_windows([]) == step_windows([], pulls)
