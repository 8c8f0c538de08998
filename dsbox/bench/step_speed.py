"""How fast the engine's steps ran during a real run, against the profile's step times.

A simulated run is only as right as the profile's step times are for the machine at the
time of the real run; a shared machine's speed drifts (on the project's 2-core CPU box
the same step's two-second median moved between 19 and 28 ms within minutes). To tell a
simulator error from a machine that ran slower or faster than when it was profiled, a
real run's every logged step (:class:`~dsbox.metrics.steps.StepRecord`, instances of PP
1) is compared with what the profile predicts for it, as the simulator charges it: the fit
of its instance's TP, the runtime overhead of its kind, and that kind's interference times
the ms other instances' steps ran beside it. The KV pulls its worker ran inside the step's
window are taken off the measured time (the simulator charges them apart, between steps;
:mod:`dsbox.metrics.step_windows`). The figure is the median ratio of measured to
predicted time: 1.2 means the engine's steps took 20% longer than the simulator's.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from dsbox.metrics.step_windows import step_windows
from dsbox.metrics.steps import PullRecord, StepRecord
from dsbox.placement.latency import InstanceLatency
from dsbox.placement.profile import LatencyProfile


def predicted_ms(lat: InstanceLatency, step: StepRecord, overlap_ms: float = 0.0) -> float:
    """The profile's time for a logged step of a PP-1 instance that other instances' steps
    ran beside for ``overlap_ms``, ms."""
    if step.is_prefill:
        model = lat.prefill_time(step.num_tokens, step.sum_sq_tokens)
        over = lat.prefill_overhead_time(step.sum_context, step.num_seqs)
        k = lat.prefill_overhead.interference
    else:
        model = lat.decode_time(step.num_seqs, step.sum_context)
        over = lat.decode_overhead_time(step.sum_context, step.num_seqs)
        k = lat.decode_overhead.interference
    return (model + over) * 1e3 + k * overlap_ms


def measured_and_predicted(steps: Sequence[StepRecord], lats: dict[int, InstanceLatency],
                           pulls: Sequence[PullRecord] = ()) -> list[tuple[float, float]]:
    """(measured, predicted) ms of each of ``steps`` whose instance is in ``lats`` (instance
    id -> its latency model, PP 1): wall time less the KV pulls inside it, and what the
    simulator charges (see the module docstring). ``pulls``: the run's KV pulls."""
    windows = step_windows(steps, pulls)
    return [(s.wall_ms - pulled, predicted_ms(lats[s.instance_id], s, over))
            for s, over, pulled in zip(steps, windows.overlap_ms, windows.pulled_ms,
                                       strict=True)
            if s.instance_id in lats]


def step_time_ratio(steps: Sequence[StepRecord], tp_of: dict[int, int],
                    profile: LatencyProfile, engine: str | None = None,
                    pulls: Sequence[PullRecord] = ()) -> float | None:
    """Median measured / predicted time over ``steps`` of the instances in ``tp_of``
    (instance id -> TP; PP-1 instances only) that the profile has a fit for, ``pulls``
    being the run's KV pulls; None without any."""
    have = set(profile.tps(engine))
    lats = {i: InstanceLatency.from_profile(profile, tp, 1, engine)
            for i, tp in tp_of.items() if tp in have}
    ratios = [m / p for m, p in measured_and_predicted(steps, lats, pulls) if p > 0]
    return statistics.median(ratios) if ratios else None
