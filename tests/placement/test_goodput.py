"""Goodput binary search: the boundary, must_beat pruning, monotone in the SLO."""

from __future__ import annotations

import math

import pytest

from dsbox.config.slo import SLO
from dsbox.placement.goodput import GoodputSearch, SearchSettings
from dsbox.placement.workload import sample_requests, synthetic_lengths
from tests.placement.factories import make_colocated, make_setup

SETTINGS = SearchSettings(num_requests=600, min_requests=100, window=30.0, tolerance=0.05)


def _search(slo: SLO) -> GoodputSearch:
    sample = sample_requests(synthetic_lengths(400, 60, seed=1, max_total=1500), 600, seed=0)
    return GoodputSearch(sample, slo, SETTINGS)


@pytest.mark.parametrize("make", [lambda: make_setup(num_decode=2), make_colocated])
def test_goodput_is_the_last_passing_grid_rate(make):
    search, setup = _search(SLO(0.4, 0.05)), make()
    g = search.goodput(setup)
    assert g > 0
    k = round(math.log(g / SETTINGS.min_rate) / math.log1p(SETTINGS.tolerance))
    assert search.rate_at(k) == pytest.approx(g)
    assert search.passes(setup, g) and not search.passes(setup, search.rate_at(k + 1))
    assert search.stats.num_simulations < 20


def test_must_beat_prunes_and_caches():
    search, setup = _search(SLO(0.4, 0.05)), make_setup(num_decode=2)
    g = search.goodput(setup)
    sims = search.stats.num_simulations
    assert search.goodput(setup, must_beat=g * 1.2) is None
    assert search.goodput(setup, must_beat=g * 0.5) == g
    assert search.stats.num_simulations == sims  # answered from the cache
    fresh = _search(SLO(0.4, 0.05))
    assert fresh.goodput(setup, must_beat=g * 1.2) is None
    assert fresh.stats.num_simulations == 1  # one probe decides


def test_goodput_does_not_fall_when_slo_loosens():
    base = SLO(0.3, 0.04)
    for make in (make_setup, make_colocated):
        setup = make()
        values = [_search(base.scaled(f)).goodput(setup) for f in (1.0, 1.5, 3.0)]
        assert values == sorted(values) and values[0] > 0


def test_unreachable_slo_gives_zero():
    search = _search(SLO(0.001, 0.001))
    assert search.goodput(make_setup()) == 0.0


def test_settings_validation():
    with pytest.raises(ValueError):
        SearchSettings(min_requests=5)
    with pytest.raises(ValueError):
        SearchSettings(tolerance=0.7)
    assert SearchSettings(window=10, min_requests=50, num_requests=100).requests_at(1.0) == 50
    assert SearchSettings(window=10, min_requests=50, num_requests=100).requests_at(100) == 100
