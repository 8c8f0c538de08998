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
