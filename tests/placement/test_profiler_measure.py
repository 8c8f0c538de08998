"""``measure`` sweeps the grid in a new order each time and keeps each shape's median.

The timer here stands in for a device whose step times depend on what ran just before
(as a CPU's did after long prefills) and that has one burst of noise."""

from __future__ import annotations

import statistics

from dsbox.placement.fitting import DecodePoint, PrefillPoint
from dsbox.placement.profiler import ProfileGrid, measure


class AfterEffectTimer:
    """1 ms per 100 tokens, doubled for the shape run right after the longest prefill,
    50x for the 5th call (a burst) and a quarter for the 12th and 20th (lucky runs, that a
    fastest-of-runs profile would keep)."""

    max_tokens = 10**6

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def run(self, phase: str, batch: int, length: int) -> float:
        previous = self.calls[-1] if self.calls else None
        self.calls.append((phase, batch, length))
        ms = batch * length / 100
        if previous == ("prefill", 1, 1024):
            ms *= 2
        if len(self.calls) == 5:
            ms *= 50
        if len(self.calls) in (12, 20):
            ms /= 4
        return ms / 1e3


def test_sweeps_are_shuffled_and_each_shape_keeps_its_median():
    grid = ProfileGrid(prefill_batches=(1,), prefill_lengths=(128, 512, 1024),
                       decode_batches=(1, 8), decode_contexts=(64, 256), repeats=5,
                       warmup=1)
    timer = AfterEffectTimer()
    points = measure(timer, grid, max_len=2048)
    shapes = list(grid.shapes(timer.max_tokens, 2048))
    sweeps = [timer.calls[k:k + len(shapes)] for k in range(0, len(timer.calls), len(shapes))]
    assert len(sweeps) == grid.warmup + grid.repeats
    assert all(sorted(s) == sorted(shapes) for s in sweeps)  # every shape once per sweep
    assert len({tuple(s) for s in sweeps}) > 1               # not one fixed order
    # neither the shape after the longest prefill, the burst nor a lucky run moves a median
    for p in points:
        if isinstance(p, PrefillPoint):
            assert p.ms == statistics.median([len(p.lengths) * p.lengths[0] / 100])
        else:
            assert isinstance(p, DecodePoint)
            assert p.ms == p.sum_context / 100
    # the same seed gives the same orders (a profile can be measured again the same way)
    again = AfterEffectTimer()
    measure(again, grid, max_len=2048)
    assert again.calls == timer.calls
