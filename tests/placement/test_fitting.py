"""Least squares on relative error, the decode threshold split, L_m from measurements."""

from __future__ import annotations

import numpy as np
import pytest

from dsbox.placement.fitting import (
    DecodePoint,
    PrefillPoint,
    fit_decode,
    fit_relative,
    fit_step,
    median_error,
    nonnegative_lstsq,
    point_from_dict,
    token_budget,
)
from dsbox.placement.profile import StepFit

TRUE = StepFit((18.0, 0.1, 7e-6), (20.0, 0.0006, 0.04), (7.0, 0.0006, 0.16), 32)


def _prefill_points(noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    pts = []
    for batch in (1, 2, 4):
        for length in (32, 64, 128, 256, 512, 1024):
            lengths = (length,) * batch
            ms = TRUE.prefill_ms(lengths) * (1 + noise * rng.standard_normal())
            pts.append(PrefillPoint(lengths, ms))
    return pts


def _decode_points(noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return [DecodePoint(b, b * c, TRUE.decode_ms(b, b * c) * (1 + noise * rng.standard_normal()))
            for b in (1, 2, 4, 8, 16, 32, 48, 64, 128) for c in (64, 256, 1024)]


def test_exact_data_recovers_the_coefficients():
    fit = fit_step(_prefill_points(), _decode_points())
    assert fit.prefill == pytest.approx(TRUE.prefill, rel=1e-6)
    assert fit.decode_threshold == 32
    assert fit.decode_small == pytest.approx(TRUE.decode_small, rel=1e-6)
    assert fit.decode_large == pytest.approx(TRUE.decode_large, rel=1e-6)


def test_relative_weighting_fits_short_steps_too():
    # an absolute least squares would let the long steps dominate; relative error keeps the
    # fixed cost right, so short steps are predicted well
    pts = _prefill_points(noise=0.03, seed=1)
    a, b, c = fit_relative(pts)
    fit = StepFit((a, b, c), TRUE.decode_small, TRUE.decode_large)
    assert median_error(fit, pts) < 0.03
    short = [p for p in pts if p.num_tokens <= 64]
    assert max(abs(fit.prefill_ms(p.lengths) - p.ms) / p.ms for p in short) < 0.1


def test_noisy_fit_predicts_held_out_points():
    train = _prefill_points(0.05, 1)[::2] + _prefill_points(0.05, 1)[1::4]
    held = _prefill_points(0.05, 2)[1::2]
    fit = fit_step(train, _decode_points(0.05, 3))
    assert median_error(fit, held) < 0.1
    assert median_error(fit, _decode_points(0.05, 4)) < 0.1


def test_single_set_when_no_split_has_enough_points():
    pts = [DecodePoint(b, b * 100, 10 + b) for b in (1, 2, 3, 4)]
    small, large, threshold = fit_decode(pts)
    assert small == large and threshold == 5


def test_token_budget_from_measurements():
    pts = [PrefillPoint((n,), 20 + 0.1 * n) for n in (64, 128, 256, 512, 1024, 2048, 4096)]
    # tokens/ms: 9.11 at 2048, 9.53 at 4096 (the best): 2048 is the first within 5%
    assert token_budget(pts) == 2048
    flat = [PrefillPoint((n,), 0.1 * n + (0 if n < 1000 else 0.00005 * n * n))
            for n in (256, 512, 768, 1024, 2048)]
    assert token_budget(flat) == 256


def test_errors_and_round_trip():
    with pytest.raises(ValueError, match="at least 3"):
        fit_relative([PrefillPoint((1,), 1.0)])
    with pytest.raises(ValueError, match="positive"):
        fit_relative([PrefillPoint((n,), 0.0) for n in (1, 2, 3)])
    for p in (PrefillPoint((3, 4), 1.5), DecodePoint(2, 10, 0.5)):
        assert point_from_dict(p.to_dict()) == p
    with pytest.raises(ValueError):
        point_from_dict({"phase": "other"})


def test_fit_keeps_every_coefficient_non_negative():
    """Decode steps measured as a CPU gave them (one sequence slower than two: a warm-up
    artefact): a free fit trades a negative per-sequence term against the constant and
    predicts under 0.5 ms for three sequences; the constrained fit has every coefficient
    >= 0, so every shape costs at least the constant."""
    pts = [DecodePoint(1, 32, 3.45), DecodePoint(1, 128, 2.63), DecodePoint(1, 512, 2.14),
           DecodePoint(2, 64, 1.82), DecodePoint(2, 256, 1.87), DecodePoint(2, 1024, 1.90)]
    x = np.array([p.features() for p in pts])
    y = np.array([p.ms for p in pts])
    free, *_ = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)
    assert min(free) < 0  # what the unconstrained fit does with these points
    a, b, c = fit_relative(pts)
    assert min(a, b, c) >= 0
    assert a + b * 600 + c * 3 >= a > 0


def test_non_negative_least_squares_is_the_best_feasible_subset():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 2.0, size=(20, 3))
    y = x @ np.array([1.0, -0.5, 2.0]) + rng.normal(0, 0.01, 20)
    w = nonnegative_lstsq(x, y)
    assert w[1] == 0.0 and w[0] > 0 and w[2] > 0
    best = np.sum((x @ w - y) ** 2)
    for trial in rng.uniform(0, 3, size=(500, 3)):  # no feasible point does better
        assert np.sum((x @ trial - y) ** 2) >= best - 1e-12
    exact = x @ np.array([1.0, 0.5, 2.0])
    assert nonnegative_lstsq(x, exact) == pytest.approx([1.0, 0.5, 2.0])
