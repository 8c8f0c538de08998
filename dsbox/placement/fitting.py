"""Fit DistServe's step-time model to measured step times (least squares on relative error).

Measurements are prefill steps (the prompt lengths of the batch, milliseconds) and decode
steps (batch size, total context, milliseconds). The fit minimises the sum of squared
*relative* errors ``((predicted - measured) / measured)^2`` (a weighted least squares),
so short and long steps count alike. Every coefficient is kept >= 0 (a step never gets
cheaper with more tokens or sequences): a free fit on a few noisy points can trade a
negative term against a positive one and then predict a near-zero or negative time for
shapes between the measured ones, as it did for small decode batches on a CPU. Decode
gets two coefficient sets split at a batch size threshold, chosen among the measured batch
sizes to minimise the same error.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dsbox.placement.profile import StepFit, detect_token_budget

MIN_POINTS_PER_SET = 3


@dataclass(frozen=True, slots=True)
class PrefillPoint:
    lengths: tuple[int, ...]
    ms: float

    @property
    def num_tokens(self) -> int:
        return sum(self.lengths)

    def features(self) -> tuple[float, float, float]:
        return 1.0, float(sum(self.lengths)), float(sum(x * x for x in self.lengths))

    def to_dict(self) -> dict:
        return {"phase": "prefill", "lengths": list(self.lengths), "ms": self.ms}


@dataclass(frozen=True, slots=True)
class DecodePoint:
    batch_size: int
    sum_context: int
    ms: float

    def features(self) -> tuple[float, float, float]:
        return 1.0, float(self.sum_context), float(self.batch_size)

    def to_dict(self) -> dict:
        return {"phase": "decode", "batch_size": self.batch_size,
                "sum_context": self.sum_context, "ms": self.ms}


def point_from_dict(data: dict) -> PrefillPoint | DecodePoint:
    if data.get("phase") == "prefill":
        return PrefillPoint(tuple(int(x) for x in data["lengths"]), float(data["ms"]))
    if data.get("phase") == "decode":
        return DecodePoint(int(data["batch_size"]), int(data["sum_context"]), float(data["ms"]))
    raise ValueError(f"unknown measurement {data!r}")


def fit_relative(points: Sequence[PrefillPoint | DecodePoint]) -> tuple[float, float, float]:
    """``(a, b, c)`` minimising the squared relative error over ``points``."""
    if len(points) < MIN_POINTS_PER_SET:
        raise ValueError(f"need at least {MIN_POINTS_PER_SET} measurements to fit, "
                         f"got {len(points)}")
    if any(p.ms <= 0 for p in points):
        raise ValueError("measured times must be positive")
    x = np.array([p.features() for p in points], dtype=np.float64)
    y = np.array([p.ms for p in points], dtype=np.float64)
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    a, b, c = (nonnegative_lstsq(x / scale / y[:, None], np.ones_like(y)) / scale).tolist()
    return a, b, c


def nonnegative_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``argmin |x @ w - y|`` subject to ``w >= 0``, for a few columns: the optimum is the
    unconstrained least squares on some subset of the columns (the others 0), so every
    subset is solved and the best one whose coefficients are all >= 0 is kept. Subsets are
    tried smallest first and a larger one must fit clearly better, so a column that adds
    nothing (the same as another, or constant where another is) stays at 0."""
    n = x.shape[1]
    best, best_err = np.zeros(n), float(np.dot(y, y))
    floor = 1e-12 * best_err
    for mask in sorted(range(1, 1 << n), key=lambda m: bin(m).count("1")):
        cols = [j for j in range(n) if mask >> j & 1]
        w, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
        if np.any(w < 0):
            continue
        full = np.zeros(n)
        full[cols] = w
        err = float(np.sum((x @ full - y) ** 2))
        if err < best_err * (1 - 1e-9) - floor:
            best, best_err = full, err
    return best


def _predict(coeffs, point) -> float:
    return float(np.dot(coeffs, point.features()))


def relative_errors(fit: StepFit, points: Sequence[PrefillPoint | DecodePoint]) -> list[float]:
    """``|predicted - measured| / measured`` for each point."""
    out = []
    for p in points:
        if isinstance(p, PrefillPoint):
            pred = fit.prefill_ms(p.lengths)
        else:
            pred = fit.decode_ms(p.batch_size, p.sum_context)
        out.append(abs(pred - p.ms) / p.ms)
    return out


def _sq_error(coeffs, points) -> float:
    return sum(((_predict(coeffs, p) - p.ms) / p.ms) ** 2 for p in points)


def fit_decode(points: Sequence[DecodePoint]) -> tuple[tuple, tuple, int]:
    """``(small, large, threshold)``: one set below ``threshold`` sequences, one from it.
    Without enough points on both sides of any split, one set serves both."""
    one = fit_relative(points)
    best = (_sq_error(one, points), one, one, max(p.batch_size for p in points) + 1)
    for threshold in sorted({p.batch_size for p in points}):
        small = [p for p in points if p.batch_size < threshold]
        large = [p for p in points if p.batch_size >= threshold]
        if len(small) < MIN_POINTS_PER_SET or len(large) < MIN_POINTS_PER_SET:
            continue
        cs, cl = fit_relative(small), fit_relative(large)
        err = _sq_error(cs, small) + _sq_error(cl, large)
        if err < best[0] * (1 - 1e-9):
            best = (err, cs, cl, threshold)
    _, small, large, threshold = best
    return small, large, threshold


def fit_step(prefill: Sequence[PrefillPoint], decode: Sequence[DecodePoint]) -> StepFit:
    small, large, threshold = fit_decode(decode)
    return StepFit(fit_relative(prefill), small, large, threshold)


def token_budget(prefill: Sequence[PrefillPoint]) -> int:
    """L_m from measured prefill steps: tokens per step past which throughput stops
    growing (the smallest step size within 5% of the best measured throughput)."""
    return detect_token_budget([(p.num_tokens, p.ms) for p in prefill])


def median_error(fit: StepFit, points) -> float:
    return statistics.median(relative_errors(fit, points)) if points else float("nan")
