"""The discrete-event simulator: queueing theory, stamps, KV limits, phase-only runs."""

from __future__ import annotations

import statistics

import pytest

from dsbox.config.slo import SLO
from dsbox.engine.core.scheduler import DecodeScheduler, PrefillScheduler, Scheduler
from dsbox.placement.latency import InstanceLatency
from dsbox.placement.profile import StepOverhead
from dsbox.placement.sim_types import SimInstance, SimSetup, SimTrace
from dsbox.placement.simulator import Simulator, simulate
from dsbox.placement.workload import sample_requests
from tests.placement.factories import (
    FIT,
    KV_BYTES,
    make_colocated,
    make_instance,
    make_setup,
    make_trace,
)

PROMPT = 512


def _mean_ttft_fixed_prompt(pp: int, load: float, n: int = 40000) -> tuple[float, float]:
    """Simulated mean TTFT of a prefill-only instance at stage load ``load`` (one request
    per batch), and the M/D/1 prediction D + R Dm^2 / (2 (1 - R Dm)), Dm = D / pp."""
    lat = InstanceLatency(1, pp, FIT)
    d = lat.prefill_time(PROMPT, PROMPT * PROMPT)
    dm = d / pp
    rate = load / dm
    setup = SimSetup((SimInstance("prefill", lat, num_blocks=100, block_size=PROMPT,
                                  max_num_batched_tokens=PROMPT),))
    trace = sample_requests([(PROMPT, 1)], n, seed=0).at_rate(rate)
    result = simulate(setup, trace)
    mean = statistics.fmean(lc.ttft for lc in result.lifecycles)
    return mean, d + rate * dm**2 / (2 * (1 - rate * dm))


@pytest.mark.parametrize("load", [0.3, 0.6, 0.8])
def test_md1_prefill_only(load):
    simulated, theory = _mean_ttft_fixed_prompt(1, load)
    assert simulated == pytest.approx(theory, rel=0.03)


@pytest.mark.parametrize("load", [0.3, 0.6, 0.8])
def test_md1_pipeline_parallel(load):
    simulated, theory = _mean_ttft_fixed_prompt(2, load)
    assert simulated == pytest.approx(theory, rel=0.05)


def test_drives_the_engine_schedulers():
    sim = Simulator(make_setup(), make_trace(5))
    assert [type(i.sched) for i in sim.instances] == [PrefillScheduler, DecodeScheduler]
    assert type(Simulator(make_colocated(), make_trace(5)).instances[0].sched) is Scheduler


def test_disaggregated_stamps_are_consistent():
    setup = make_setup(num_prefill=2, num_decode=2, bandwidth=50e9)
    trace = make_trace(300, rate=8.0)
    result = simulate(setup, trace)
    assert len(result.lifecycles) == 300
    for lc, prompt, out in zip(result.lifecycles, trace.prompt_lens, trace.output_lens,
                               strict=True):
        assert len(lc.token_times) == out
        stamps = [lc.arrival, lc.prefill_queued, lc.prefill_start, lc.prefill_end]
        assert stamps == sorted(stamps) and lc.prefill_queued == lc.arrival
        assert lc.token_times[0] == lc.prefill_end  # the first token comes out of prefill
        if out == 1:
            assert lc.finish == lc.prefill_end and lc.transfer_start is None
            continue
        stamps = [lc.prefill_end, lc.decode_queued, lc.transfer_start, lc.transfer_end,
                  lc.decode_start, *lc.token_times[1:]]
        assert stamps == sorted(stamps)
        assert lc.transfer_end - lc.transfer_start == pytest.approx(prompt * KV_BYTES / 50e9)
        assert lc.finish == lc.token_times[-1]
        assert lc.breakdown().total() == pytest.approx(lc.latency)


def test_colocated_stamps_have_no_transfer():
    result = simulate(make_colocated(), make_trace(100, rate=3.0))
    for lc in result.lifecycles:
        assert lc.transfer_start == lc.transfer_end == lc.prefill_end == lc.decode_queued
        if len(lc.token_times) > 1:
            assert lc.breakdown().transfer == 0


def test_decode_memory_limits_pull_and_prefill_buffers():
    # a decode pool for ~3 requests: requests wait (KV held by prefill) until pulled
    setup = make_setup(decode={"num_blocks": 100})
    trace = make_trace(60, rate=20.0, mean_prompt=300, mean_output=40)
    result = simulate(setup, trace)
    waits = [lc.transfer_start - lc.decode_queued for lc in result.lifecycles
             if lc.transfer_start is not None]
    assert max(waits) > 0.1
    assert all(lc.finish is not None for lc in result.lifecycles)


def test_colocated_preempts_when_blocks_run_out():
    setup = make_colocated(num_blocks=120)
    result = simulate(setup, make_trace(80, rate=20.0, mean_prompt=300, mean_output=80))
    assert sum(lc.num_preemptions for lc in result.lifecycles) > 0
    assert all(len(lc.token_times) == out for lc, out in
               zip(result.lifecycles, make_trace(80, rate=20.0, mean_prompt=300,
                                                 mean_output=80).output_lens, strict=True))


def test_phase_only_runs():
    trace = make_trace(200, rate=5.0)
    slo = SLO(0.2, 0.03)
    pre = simulate(make_setup(num_decode=0), trace, slo)
    for lc in pre.lifecycles:
        assert len(lc.token_times) == 1 and lc.finish == lc.prefill_end
    assert pre.num_met == sum(lc.ttft <= 0.2 for lc in pre.lifecycles)
    dec = simulate(make_setup(num_prefill=0), trace, slo)
    for lc, out in zip(dec.lifecycles, trace.output_lens, strict=True):
        assert lc.ttft == 0 and len(lc.token_times) == out
    assert dec.num_met == sum(lc.tpot <= 0.03 for lc in dec.lifecycles)


@pytest.mark.parametrize("rate", [2.0, 6.0, 12.0])
def test_early_stop_gives_the_full_runs_verdict(rate):
    setup, slo = make_setup(), SLO(0.3, 0.04)
    trace = make_trace(300, rate=rate)
    full = simulate(setup, trace, slo)
    early = simulate(setup, trace, slo, stop_early=True)
    assert early.passed == full.passed == (full.attainment() >= 0.9)
    assert full.num_met + full.num_violated == 300 and not full.stopped_early
    assert early.stopped_early


def test_rejects_requests_larger_than_a_pool():
    trace = SimTrace((0.0,), (1000,), (100,))
    with pytest.raises(ValueError, match="does not fit"):
        simulate(make_setup(decode={"num_blocks": 10}), trace)
    with pytest.raises(ValueError, match="stop_early needs"):
        simulate(make_setup(), trace, stop_early=True)


def test_pipelined_prefill_overlaps_batches():
    lat = InstanceLatency(1, 2, FIT)
    setup = SimSetup((SimInstance("prefill", lat, 100, 512, 512),))
    trace = SimTrace((0.0, 0.0), (512, 512), (1, 1))
    a, b = simulate(setup, trace).lifecycles
    d = lat.prefill_time(512, 512 * 512)
    assert a.ttft == pytest.approx(d) and b.ttft == pytest.approx(1.5 * d)
    assert a.prefill_start == 0.0 and b.prefill_start == pytest.approx(d / 2)


def test_instance_validation():
    with pytest.raises(ValueError):
        make_instance("router")
    with pytest.raises(ValueError, match="bandwidth"):
        SimSetup((make_instance("prefill"), make_instance("decode")), KV_BYTES)
    with pytest.raises(ValueError, match="mix"):
        SimSetup((make_instance("prefill"), make_instance("colocated")))


@pytest.mark.parametrize("pp", [1, 2])
@pytest.mark.parametrize("fast", [True, False])
def test_step_overhead_is_paid_by_every_step(pp, fast):
    """One request alone on a prefill and a decode instance: every step takes the
    runtime's overhead of its kind (prefill 2 ms + 1e-3 ms per context token, decode 0.5 ms
    + 2e-3 ms per token) on top of the model's time, once per step whatever the PP (it is
    paid in stage 0's slot)."""
    lat = InstanceLatency(1, pp, FIT, StepOverhead(2.0, 1e-3), StepOverhead(0.5, 2e-3))
    insts = tuple(SimInstance(role, lat, 4000) for role in ("prefill", "decode"))
    setup = SimSetup(insts, KV_BYTES, ((1e30,),))
    prompt, output = 300, 6
    (lc,) = simulate(setup, SimTrace((0.0,), (prompt,), (output,)), fast=fast).lifecycles
    whole = InstanceLatency(1, 1, FIT)
    assert lc.ttft == pytest.approx(whole.prefill_time(prompt, prompt**2)
                                    + (2.0 + 1e-3 * prompt) * 1e-3)
    for k in range(1, output):
        context = prompt + k
        gap = lc.token_times[k] - lc.token_times[k - 1]
        expected = whole.decode_time(1, context) + (0.5 + 2e-3 * context) * 1e-3
        assert gap == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("fast", [True, False])
def test_per_sequence_overhead_grows_with_the_batch(fast):
    """A decode step of ``B`` sequences pays the per-sequence overhead ``B`` times: three
    requests decoding together on one colocated instance are ``2 * 0.3 ms`` slower per
    token with 0.3 ms per sequence than one request alone is; a prefill step of all
    three pays it three times too."""
    def gaps(per_seq: float, n: int) -> tuple[float, float]:
        over = StepOverhead(0.0, 0.0, per_seq)
        setup = SimSetup((SimInstance("colocated", InstanceLatency(1, 1, FIT, over, over),
                                      4000),))
        trace = SimTrace((0.0,) * n, (50,) * n, (8,) * n)
        lc = simulate(setup, trace, fast=fast).lifecycles[0]
        return lc.ttft, lc.token_times[-1] - lc.token_times[-2]

    (ttft1, gap1), (ttft3, gap3) = gaps(0.0, 1), gaps(0.0, 3)
    (ttft1o, gap1o), (ttft3o, gap3o) = gaps(0.3, 1), gaps(0.3, 3)
    assert gap1o - gap1 == pytest.approx(0.3e-3, rel=1e-6)
    assert gap3o - gap3 == pytest.approx(3 * 0.3e-3, rel=1e-6)
    assert ttft3o - ttft3 == pytest.approx(3 * 0.3e-3, rel=1e-6)
    assert ttft1o - ttft1 == pytest.approx(0.3e-3, rel=1e-6)


@pytest.mark.parametrize("shared", [False, True])
def test_transfers_over_a_shared_link_take_turns(shared):
    """Two prompts prefilled at once on two prefill instances move their KV to one decode
    instance at the same time: over links of their own both arrive after ``bytes /
    bandwidth``; over one shared network link the second waits for the first."""
    prompt, bw = 200, 1e9
    inst = [make_instance("prefill"), make_instance("prefill"), make_instance("decode")]
    links = (((7,),), ((7,),)) if shared else ()
    setup = SimSetup(tuple(inst), KV_BYTES, ((bw,), (bw,)), links)
    trace = SimTrace((0.0, 0.0), (prompt, prompt), (3, 3))
    a, b = simulate(setup, trace).lifecycles
    one = prompt * KV_BYTES / bw
    assert a.transfer_start == b.transfer_start == a.prefill_end == b.prefill_end
    assert a.transfer_end - a.transfer_start == pytest.approx(one)
    assert b.transfer_end - b.transfer_start == pytest.approx(2 * one if shared else one)
    with pytest.raises(ValueError, match="links"):
        SimSetup(tuple(inst), KV_BYTES, ((bw,), (bw,)), (((1,), (2,)),))


@pytest.mark.parametrize("fast", [True, False])
def test_kv_pull_is_time_on_the_decode_instance(fast):
    """With a KV pull cost (4 ms + 0.01 ms per prompt token), a lone request's KV arrives
    that much after its prefill, and its first decode step starts only then; two prompts
    prefilled together are copied in one after the other."""
    pull = StepOverhead(4.0, 0.01)
    prompt, output = 300, 6

    def lifecycles(cost: StepOverhead, n: int):
        lat = InstanceLatency(1, 1, FIT, pull_overhead=cost)
        setup = SimSetup(tuple(SimInstance(r, lat, 4000) for r in ("prefill", "decode")),
                         KV_BYTES, ((1e30,),))
        trace = SimTrace((0.0,) * n, (prompt,) * n, (output,) * n)
        return simulate(setup, trace, fast=fast).lifecycles

    (free,), (paid,) = lifecycles(StepOverhead(), 1), lifecycles(pull, 1)
    one = (4.0 + 0.01 * prompt) * 1e-3
    assert paid.ttft == pytest.approx(free.ttft)
    assert paid.transfer_end - paid.transfer_start == pytest.approx(one)
    assert free.transfer_end == pytest.approx(free.transfer_start)
    assert paid.finish - free.finish == pytest.approx(one)
    a, b = lifecycles(pull, 2)
    assert a.transfer_start == b.transfer_start
    ends = sorted((a.transfer_end - a.transfer_start, b.transfer_end - b.transfer_start))
    assert ends == pytest.approx([one, 2 * one])


@pytest.mark.parametrize("fast", [True, False])
def test_steps_side_by_side_lengthen_each_other(fast):
    """Two colocated instances with an interference of 0.5 (a step runs 0.5 ms longer per
    ms that a step of the other runs beside it): one request alone is not slowed; two
    identical requests, one on each, run every step side by side, so each step takes 1.5
    times as long (both the one in flight, rescheduled, and the one that starts beside it).
    Without interference the two run as fast as one."""
    prompt, output = 200, 5

    def lifecycles(k: float, n: int):
        over = StepOverhead(interference=k)
        inst = SimInstance("colocated", InstanceLatency(1, 1, FIT, over, over), 4000)
        trace = SimTrace((0.0,) * n, (prompt,) * n, (output,) * n)
        return simulate(SimSetup((inst, inst)), trace, fast=fast).lifecycles

    (alone,) = lifecycles(0.0, 1)
    (alone_k,) = lifecycles(0.5, 1)
    assert alone_k.token_times == pytest.approx(alone.token_times)
    for lc in lifecycles(0.0, 2):
        assert lc.token_times == pytest.approx(alone.token_times)
    for lc in lifecycles(0.5, 2):
        assert lc.ttft == pytest.approx(1.5 * alone.ttft, rel=1e-9)
        assert lc.finish == pytest.approx(1.5 * alone.finish, rel=1e-9)
