"""Goodput from a sweep plus a binary search on rate."""

from __future__ import annotations

import pytest

from dsbox.bench.goodput import MAX_HALVINGS, bracket, search_goodput


def _knee(limit: float):
    """Attainment of a system that meets the SLO up to ``limit`` req/s (calls recorded)."""
    calls = []

    def attainment_at(rate: float) -> float:
        calls.append(rate)
        return 0.95 if rate <= limit else 0.5

    return attainment_at, calls


def test_bracket_takes_the_passing_rate_below_the_first_failure():
    sweep = [(1, 0.99), (2, 0.92), (3, 0.85), (4, 0.91), (5, 0.2)]
    assert bracket(sweep, 0.9) == (2, 3)
    assert bracket([(1, 0.95)], 0.9) == (1, None)
    assert bracket([(1, 0.5)], 0.9) == (None, 1)


def test_binary_search_inside_the_sweep_bracket():
    at, calls = _knee(3.3)
    goodput, upper, probes = search_goodput([(1, 0.99), (2, 0.95), (4, 0.5)], at, 0.9, 20)
    assert 3.3 * 0.98 <= goodput <= 3.3 < upper <= goodput * 1.02
    assert all(2 < r < 4 for r in calls) and len(probes) == len(calls)


def test_search_doubles_when_every_rate_passes_and_respects_the_probe_budget():
    at, calls = _knee(9.0)
    goodput, upper, _ = search_goodput([(1, 0.99), (2, 0.99)], at, 0.9, 20)
    assert calls[:3] == [4, 8, 16] and goodput == pytest.approx(9.0, rel=0.02)
    at, calls = _knee(9.0)
    goodput, upper, probes = search_goodput([(1, 0.99), (2, 0.99)], at, 0.9, 2)
    assert (goodput, upper, len(probes)) == (8, None, 2)
    assert search_goodput([(1, 0.99)], at, 0.9, 0)[:2] == (1, None)


def test_search_halves_a_bounded_number_of_times_when_nothing_passes():
    at, calls = _knee(0.3)
    goodput, upper, _ = search_goodput([(1, 0.5), (2, 0.4)], at, 0.9, 30)
    assert calls[:2] == [0.5, 0.25] and goodput == pytest.approx(0.3, rel=0.02)
    at, calls = _knee(0.0)  # never met, not even alone
    goodput, upper, _ = search_goodput([(1, 0.5)], at, 0.9, 30)
    assert goodput == 0.0 and len(calls) == MAX_HALVINGS and upper == 1 / 2**MAX_HALVINGS
