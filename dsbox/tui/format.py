"""How the dashboard writes numbers: every figure with its unit, ``-`` where there is none."""

from __future__ import annotations

import math


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def ms(seconds: float | None) -> str:
    """Seconds as milliseconds: ``12.3 ms``; ``-`` for None or NaN."""
    if _missing(seconds):
        return "-"
    value = seconds * 1000
    return f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms"


def pct(share: float | None) -> str:
    """A share 0..1 as a percentage: ``45 %``."""
    return "-" if _missing(share) else f"{share * 100:.0f} %"


def rate(value: float | None, unit: str) -> str:
    """``2.50 req/s``, ``130 tok/s``."""
    if _missing(value):
        return "-"
    return f"{value:.2f} {unit}" if value < 10 else f"{value:.0f} {unit}"


def byte_rate(bytes_per_s: float) -> str:
    """``0 B/s``, ``12.3 KiB/s``, ``4.5 MiB/s``, ``1.2 GiB/s``."""
    value = float(bytes_per_s)
    for unit in ("B/s", "KiB/s", "MiB/s"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B/s" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB/s"


def gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def seconds(value: float) -> str:
    return f"{value:.0f} s"
