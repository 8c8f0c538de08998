"""Request rates for a bench: one rate, a list (``1,1.5,2``) or a sweep (``0.5:4:0.5``)."""

from __future__ import annotations

import math

MAX_SWEEP_POINTS = 200


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"rate {text.strip()!r} is not a number of requests/s") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"rate must be > 0 requests/s, got {text.strip()}")
    return value


def parse_rates(text: str) -> tuple[float, ...]:
    """``"2"``, ``"1,1.5,2"`` or ``"START:STOP:STEP"`` (STOP included) -> rates in req/s,
    sorted, without duplicates. Raises ValueError for a rate <= 0 or a malformed text."""
    text = text.strip()
    if not text:
        raise ValueError("no rate given")
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(f"rate sweep {text!r}: expected START:STOP:STEP")
        start, stop, step = (_rate(p) for p in parts)
        if stop < start:
            raise ValueError(f"rate sweep {text!r}: STOP is below START")
        count = math.floor((stop - start) / step + 1e-9) + 1
        if count > MAX_SWEEP_POINTS:
            raise ValueError(f"rate sweep {text!r} has {count} rates (at most "
                             f"{MAX_SWEEP_POINTS})")
        rates = [round(start + k * step, 9) for k in range(count)]
    else:
        rates = [_rate(p) for p in text.split(",")]
    return tuple(sorted(set(rates)))
