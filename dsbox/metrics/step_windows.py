"""What ran beside each logged engine step: other instances' steps and the step's own
worker's KV pulls.

Instances that share a machine slow each other down (the profile's ``interference``: extra
ms per ms of another instance's step alongside), and a decode worker copies pulled KV in
between its steps, so a pull that falls inside a step's logged window lengthens that
step's wall time by time the simulator charges apart. ``dsbox profile`` fits the
interference from these figures and takes the pull time off each step's overhead; the
bench's step speed (measured against predicted step time) does the same, so both compare
a step with what the simulator charges for it.

Covered time is summed over the other windows (two other instances' steps both beside a
step count twice), computed in ``O(n log n)`` from sorted starts and ends: the time the
windows cover up to ``x`` is ``sum over starts s < x of (x - s)`` minus ``sum over ends e <
x of (x - e)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dsbox.metrics.steps import PullRecord, StepRecord


@dataclass(frozen=True, slots=True)
class StepWindows:
    """Per logged step (in the order given): ms of other instances' steps beside it, and ms
    of its own instance's KV pulls inside it."""

    overlap_ms: tuple[float, ...]
    pulled_ms: tuple[float, ...]


def covered_ms(starts: np.ndarray, ends: np.ndarray, other_starts: np.ndarray,
               other_ends: np.ndarray) -> np.ndarray:
    """For each window ``[starts[i], ends[i]]`` (seconds): the ms the other windows cover
    of it, summed over them."""
    if not len(other_starts) or not len(starts):
        return np.zeros(len(starts))
    t0 = float(min(starts.min(), other_starts.min()))  # keep the products small
    s_sorted = np.sort(other_starts - t0)
    e_sorted = np.sort(other_ends - t0)
    s_cum = np.concatenate(([0.0], np.cumsum(s_sorted)))
    e_cum = np.concatenate(([0.0], np.cumsum(e_sorted)))

    def up_to(x: np.ndarray) -> np.ndarray:
        ks = np.searchsorted(s_sorted, x, side="left")
        ke = np.searchsorted(e_sorted, x, side="left")
        return (ks * x - s_cum[ks]) - (ke * x - e_cum[ke])

    return np.clip(up_to(ends - t0) - up_to(starts - t0), 0.0, None) * 1e3


def step_windows(steps: Sequence[StepRecord], pulls: Sequence[PullRecord] = ()
                 ) -> StepWindows:
    """What ran beside each of ``steps`` (see the module docstring)."""
    starts = np.array([st.start for st in steps], dtype=np.float64)
    ends = np.array([st.end for st in steps], dtype=np.float64)
    owner = np.array([st.instance_id for st in steps])
    overlap = np.zeros(len(steps))
    pulled = np.zeros(len(steps))
    for inst in set(owner.tolist()):
        mine, others = owner == inst, owner != inst
        overlap[mine] = covered_ms(starts[mine], ends[mine], starts[others], ends[others])
        own = [p for p in pulls if p.instance_id == inst]
        pulled[mine] = covered_ms(starts[mine], ends[mine],
                                  np.array([p.start for p in own], dtype=np.float64),
                                  np.array([p.end for p in own], dtype=np.float64))
    return StepWindows(tuple(overlap.tolist()), tuple(pulled.tolist()))
