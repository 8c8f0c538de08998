"""Pipeline parallelism in the simulator follows the runtime (``Instance.submit_steps``): a
step enters whenever stage 0 is free, each ``schedule(now, busy, cap)`` with ``busy`` the
sequences in flight and ``cap = max(1, ceil(num_running / pp))``, or 0 while ``pp`` decode
micro-batches are in flight; a step takes 1/pp of its whole-model time in each stage, leaves
stage 0 after one stage time and ends after ``pp``. Under Poisson arrivals a round over the
running batch is ``pp`` micro-batches."""

from __future__ import annotations

import bisect
import statistics

import pytest

from dsbox.engine.core.scheduler import Phase, SchedulerOutput
from dsbox.placement.latency import InstanceLatency
from dsbox.placement.lazy_decode import Group
from dsbox.placement.sim_types import SimInstance, SimSetup, SimTrace
from dsbox.placement.simulator import Simulator, simulate
from tests.placement.factories import FIT, make_colocated, make_setup, make_trace

PROMPT, OUTPUT, MICRO = 256, 129, 32
WHOLE = InstanceLatency(1, 1, FIT)  # the whole model's decode time of one micro-batch


def _decode_only(pp: int, num_seqs: int, prompt: int = PROMPT, output: int = OUTPUT):
    setup = SimSetup((SimInstance("decode", InstanceLatency(1, pp, FIT), num_blocks=4000),))
    trace = SimTrace((0.0,) * num_seqs, (prompt,) * num_seqs, (output,) * num_seqs)
    return setup, trace


@pytest.mark.parametrize("pp", [2, 4])
@pytest.mark.parametrize("fast", [True, False])
def test_steady_batch_tpot_is_the_pipelined_value(pp, fast):
    """``pp * MICRO`` requests decode together. The cap is ``MICRO``, so the batch runs as
    ``pp`` micro-batches of ``MICRO`` sequences. A micro-batch at its j-th decode step holds
    ``C_j = MICRO * (PROMPT + 1 + j)`` tokens of context and takes ``s_j = d(MICRO, C_j) / pp``
    per stage (``d``: the whole model's decode time). Each micro-batch leaves stage 0 after
    ``s_j``, the next one enters then, and after ``pp`` stage times the first one is done
    and stage 0 is free again: every sequence gets a token every ``pp * s_j = d(MICRO,
    C_j)``. So TPOT = mean over j = 0 .. OUTPUT-2 of ``d(MICRO, C_j)``."""
    setup, trace = _decode_only(pp, pp * MICRO)
    result = simulate(setup, trace, fast=fast)
    period = [WHOLE.decode_time(MICRO, MICRO * (PROMPT + 1 + j)) for j in range(OUTPUT - 1)]
    analytic = statistics.fmean(period)
    tpot = statistics.fmean(lc.tpot for lc in result.lifecycles)
    assert tpot == pytest.approx(analytic, rel=0.02)
    # steady state: each gap is one pipelined period of the micro-batch
    j = OUTPUT // 2
    gaps = [lc.token_times[j + 1] - lc.token_times[j] for lc in result.lifecycles]
    assert statistics.median(gaps) == pytest.approx(period[j], rel=0.005)
    # pp micro-batches per token (plus the lone first one, decoded before the rest landed)
    assert result.num_steps == pp * (OUTPUT - 1) + 1
    # one round over the whole batch would be far off
    whole_batch = statistics.fmean(WHOLE.decode_time(pp * MICRO, pp * c) for c in
                                   (MICRO * (PROMPT + 1 + j) for j in range(OUTPUT - 1)))
    assert whole_batch > 1.3 * tpot


def test_two_sequences_alternate_as_micro_batches():
    """PP = 2, two sequences, cap 1: one micro-batch each; the second enters stage 0 when
    the first leaves it, so its tokens come one stage time after the first one's."""
    setup, trace = _decode_only(2, 2, prompt=100, output=20)
    a, b = simulate(setup, trace).lifecycles
    stage = WHOLE.decode_time(1, 101) / 2
    assert a.token_times[1] == pytest.approx(2 * stage)
    assert b.decode_start == pytest.approx(stage) and b.token_times[1] == pytest.approx(3 * stage)
    for k in range(1, 19):
        assert b.token_times[k] - a.token_times[k] == pytest.approx(stage, rel=1e-3)
        gap = a.token_times[k + 1] - a.token_times[k]
        assert gap == pytest.approx(WHOLE.decode_time(1, 100 + k), rel=1e-3)


def test_prefill_enters_when_stage_0_is_free():
    """PP = 2 prefill: a long batch, then two short ones. The second enters stage 0 when
    the first leaves it; the third enters stage 0 as soon as the second leaves it (the
    runtime submits whenever stage 0 is free), then waits before stage 1 for the second."""
    lat = InstanceLatency(1, 2, FIT)
    setup = SimSetup((SimInstance("prefill", lat, 1000, 16, max_num_batched_tokens=2000),))
    trace = SimTrace((0.0, 0.001, 0.002), (2000, 1500, 1500), (1, 1, 1))
    a, b, c = simulate(setup, trace).lifecycles
    big = lat.prefill_stage_time(2000, 2000**2)
    small = lat.prefill_stage_time(1500, 1500**2)
    assert a.prefill_end == pytest.approx(2 * big)
    assert b.prefill_start == pytest.approx(big)
    assert b.prefill_end == pytest.approx(2 * big + small)
    assert big + small < 2 * big  # stage 0 is free before the first step ends
    assert c.prefill_start == pytest.approx(big + small)
    assert c.prefill_end == pytest.approx(2 * big + 2 * small)


class _Checked(Simulator):
    """Checks every step against the runtime's rule and records the steps in flight."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.flights: dict[int, list] = {inst.index: [] for inst in self.instances}
        self.max_in_flight = {inst.index: 0 for inst in self.instances}
        self.lazy_steps = self.decode_steps = 0
        for inst in self.instances:
            inst.sched.schedule = self._checked_schedule(inst, inst.sched.schedule)

    def _in_flight_ids(self, inst) -> set[int]:
        return {i for out in self.flights[inst.index] for i in _ids(out)}

    def _checked_schedule(self, inst, schedule):
        def wrapped(now, busy=(), max_decode_seqs=None):
            assert set(busy) == self._in_flight_ids(inst)
            decoding = sum(_is_decode(out) for out in self.flights[inst.index])
            expected = None if inst.pp == 1 else max(1, -(-inst.sched.num_running // inst.pp))
            if inst.pp > 1 and decoding >= inst.pp:
                expected = 0  # pp decode micro-batches in flight: none more
            assert max_decode_seqs == expected
            out = schedule(now, busy, max_decode_seqs)
            if out is not None and out.phase is Phase.DECODE:
                assert expected != 0 or not out.seqs
                assert len(out.seqs) <= (len(out.seqs) if expected is None else expected)
                assert not {s.seq_id for s in out.seqs} & set(busy)
            return out
        return wrapped

    def _start(self, inst, now, out) -> None:
        assert not inst.stage_busy  # the runtime's rule: a step enters a free stage 0
        if _is_decode(out):
            self.decode_steps += 1
            self.lazy_steps += isinstance(out, Group)
            assert not set(_ids(out)) & self._in_flight_ids(inst)
        self.flights[inst.index].append(out)
        self.max_in_flight[inst.index] = max(self.max_in_flight[inst.index],
                                             len(self.flights[inst.index]))
        super()._start(inst, now, out)
        if inst.pp > 1:
            assert inst.busy() == self._in_flight_ids(inst)

    def _step_done(self, inst, out, now) -> None:
        self.flights[inst.index].remove(out)
        super()._step_done(inst, out, now)


def _is_decode(out) -> bool:
    return not isinstance(out, SchedulerOutput) or out.phase is Phase.DECODE


def _ids(out) -> list[int]:
    if isinstance(out, Group):
        return list(out.ids)
    return [s.seq_id for s in out.seqs]


PP_CASES = {
    "decode-pp2": lambda: make_setup(decode={"pp": 2}, prefill={"pp": 2}),
    "decode-pp3-preempts": lambda: make_setup(decode={"pp": 3, "num_blocks": 200,
                                                      "block_size": 8}),
    "colocated-pp3-cap": lambda: make_colocated(pp=3, max_num_seqs=20, budget=600),
    "decode-only-pp4": lambda: make_setup(num_prefill=0, decode={"pp": 4}),
}


@pytest.mark.parametrize("case", sorted(PP_CASES))
@pytest.mark.parametrize("fast", [True, False])
def test_steps_follow_the_runtime_rule(case, fast):
    setup = PP_CASES[case]()
    trace = make_trace(150, rate=10.0, mean_prompt=300, mean_output=70)
    sim = _Checked(setup, trace, fast=fast)
    result = sim.run()
    assert all(lc.finish is not None for lc in result.lifecycles)
    if "preempts" in case:
        assert sum(lc.num_preemptions for lc in result.lifecycles) > 0
    pps = [inst.pp for inst in sim.instances]
    # every instance filled its pipeline (more than pp only when a short step queues
    # behind a long one between stages)
    assert all(m >= pp for m, pp in zip(sim.max_in_flight.values(), pps, strict=True))
    if fast:  # the lazy path takes (nearly) all the decode micro-batches
        assert sim.lazy_steps >= 0.9 * sim.decode_steps
    else:
        assert sim.lazy_steps == 0


def micro_batches_per_round(lifecycles, start: float, end: float) -> float:
    """Mean number of decode steps that end between two consecutive tokens of a sequence
    (its own step included), over the gaps that begin in ``[start, end)``. Every decode
    step stamps its sequences' tokens with its end time, so the distinct decode token
    times are the step ends."""
    ends = sorted({t for lc in lifecycles for t in lc.token_times[1:]})
    counts = []
    for lc in lifecycles:
        times = lc.token_times
        for k in range(1, len(times) - 1):
            if start <= times[k] < end:
                counts.append(bisect.bisect_right(ends, times[k + 1])
                              - bisect.bisect_right(ends, times[k]))
    return statistics.fmean(counts)


@pytest.mark.parametrize("pp", [2, 4])
@pytest.mark.parametrize("fast", [True, False])
def test_poisson_arrivals_make_pp_micro_batches_per_round(pp, fast):
    """A decode instance under Poisson arrivals (a batch of ~40 sequences that keeps
    changing): newcomers wait for a micro-batch to come back instead of forming extra
    ones, so each round over the batch is ``pp`` micro-batches (each paying the fixed
    cost of a step), not ~1.45 pp as when every free stage 0 took the sequences left."""
    setup = make_setup(num_prefill=0, decode={"pp": pp})
    trace = make_trace(1200, rate=30.0, mean_prompt=300, mean_output=60)
    result = simulate(setup, trace, fast=fast)
    assert all(lc.finish is not None for lc in result.lifecycles)
    mid = trace.arrivals[len(trace) // 5], trace.arrivals[4 * len(trace) // 5]
    batch = statistics.fmean(len([lc for lc in result.lifecycles
                                  if lc.arrival <= t < lc.finish])
                             for t in (mid[0], (mid[0] + mid[1]) / 2, mid[1]))
    assert batch > 4 * pp  # a batch large enough to split into pp micro-batches
    assert micro_batches_per_round(result.lifecycles, *mid) == pytest.approx(pp, rel=0.03)
