"""Back-of-envelope rate estimates of a setup, to seed and order the goodput search.

These are guesses, not bounds: they start the binary search near the answer (the search
brackets the true value by simulation either way) and order configurations so the best
ones are simulated first, which lets the rest stop after one probe.

- Prefill instance: ``pp`` batches in flight, one request per ``prefill_time(l)``; with a
  TTFT target, the M/D/1 load at which the mean TTFT reaches it.
- Decode instance: the largest batch whose step time stays within the TPOT target (and
  fits the KV pool and the batch cap), producing ``B / step_time`` tokens per second, less
  the time its first stage spends copying in each request's KV (the profile's KV pull,
  which the simulator runs between steps).
- Colocated instance: the two combined harmonically (it does both jobs).

:func:`rate_upper_bound` is different: a true upper bound on the rate a setup can serve
whatever the SLO. A step takes at least the sum of its sequences' marginal costs (the fit
without its intercept; for decode the smaller of the two coefficient sets'), the ``pp``
stages of an instance work at once (but a decode instance's KV pulls all take its first
stage), and KV over the network takes the node links' time
(:func:`network_rate_bound`). The goodput search never probes above it, and a
configuration whose bound cannot beat the best found so far is not simulated at all.
"""

from __future__ import annotations

import math

from dsbox.config.slo import SLO
from dsbox.placement.sim_types import SimInstance, SimSetup
from dsbox.placement.workload import RequestSample


def prefill_rate(inst: SimInstance, sample: RequestSample, slo: SLO | None) -> float:
    """Requests per second one prefill instance serves within the TTFT target."""
    lat = inst.latency
    overhead = lat.prefill_overhead_time(int(sample.mean_prompt))
    model = lat.prefill_time(sample.mean_prompt, sample.mean_prompt_sq)
    service = model + overhead
    stage = model / lat.pp + overhead
    rate = 1.0 / stage
    if slo is not None:
        slack = slo.ttft / service - 1.0
        if slack <= 0:
            return 0.05 * rate
        # M/D/1 with service ``stage``: wait = rho * stage / (2 (1 - rho)) <= slack * service
        x = slack * service / stage
        rate *= min(0.98, 2 * x / (1 + 2 * x))
    return rate


def decode_rate(inst: SimInstance, sample: RequestSample, slo: SLO | None) -> float:
    """Requests per second one decode instance serves within the TPOT target."""
    lat = inst.latency
    mean_ctx = sample.mean_prompt + sample.mean_output / 2
    tokens_per_request = max(1.0, sample.mean_output - 1)
    max_batch = int(min(inst.max_num_seqs,
                        inst.kv_capacity_tokens / (sample.mean_prompt + sample.mean_output)))
    best = 0.0
    for batch in range(1, max(1, max_batch) + 1):
        context = int(batch * mean_ctx)
        groups = min(lat.pp, batch)
        step = lat.decode_time(batch, context) + groups * lat.decode_overhead_time(
            context // groups, -(-batch // groups))
        if slo is not None and step > slo.tpot and batch > 1:
            break
        best = max(best, batch / step)
    rate = best / tokens_per_request
    return rate / (1.0 + rate * pull_ms(inst, sample) * 1e-3)


def instance_rate(inst: SimInstance, sample: RequestSample, slo: SLO | None) -> float:
    if inst.role == "prefill":
        return prefill_rate(inst, sample, slo)
    if inst.role == "decode":
        return decode_rate(inst, sample, slo)
    p, d = prefill_rate(inst, sample, slo), decode_rate(inst, sample, slo)
    return 1.0 / (1.0 / max(p, 1e-9) + 1.0 / max(d, 1e-9))


def network_rate_bound(setup: SimSetup, mean_prompt: float) -> float:
    """Requests/s the shared network links can carry (inf unless every prefill -> decode
    route crosses them): each request keeps one link out of a node and one into a node
    busy for at least the fastest route's transfer time of a mean prompt's KV."""
    if not setup.links or any(not ids for row in setup.links for ids in row):
        return math.inf
    fastest = max(bw for row in setup.bandwidth for bw in row)
    seconds = mean_prompt * setup.kv_bytes_per_token / fastest
    ids = {k for row in setup.links for route in row for k in route}
    outs = sum(1 for k in ids if k % 2 == 0)
    return min(outs, len(ids) - outs) / seconds if seconds > 0 else math.inf


def prefill_work_ms(inst: SimInstance, sample: RequestSample) -> float:
    """Least whole-model time (ms) one mean request's prefill adds to its batches: its
    tokens' marginal cost, and its share of the step's fixed cost (intercept and
    overhead). A batch holds at most the token budget, or one longer prompt alone, so a
    prompt of ``l`` tokens takes at least ``min(1, l / budget)`` of a step's fixed cost."""
    lat = inst.latency
    a, b, c = lat.fit.prefill
    share = sample.batch_share(inst.max_num_batched_tokens)
    fixed = max(a, 0.0) + lat.prefill_overhead.ms
    per_token = b + lat.prefill_overhead.ms_per_token
    return (per_token * sample.mean_prompt + c * sample.mean_prompt_sq
            + lat.prefill_overhead.ms_per_seq + fixed * share)


def decode_work_ms(inst: SimInstance, sample: RequestSample) -> float:
    """Least whole-model time (ms) one mean request's decode steps add to their batches:
    ``sum over its tokens j >= 1 of b * (prompt + j) + c`` (the smaller coefficients of
    the two sets, the runtime's per-token and per-sequence overheads added)."""
    lat = inst.latency
    fit = lat.fit
    b = min(fit.decode_small[1], fit.decode_large[1]) + lat.decode_overhead.ms_per_token
    c = min(fit.decode_small[2], fit.decode_large[2]) + lat.decode_overhead.ms_per_seq
    steps, ctx_sum = sample.decode_moments()
    return b * ctx_sum + c * steps


def pull_ms(inst: SimInstance, sample: RequestSample) -> float:
    """Mean time (ms) a decode instance's first stage copies in one request's KV."""
    return inst.latency.pull_time(sample.mean_prompt) * 1e3 if inst.role == "decode" else 0.0


def _bound(work_ms: float, pp: int, stage0_ms: float = 0.0) -> float:
    per_request = work_ms / pp + stage0_ms
    return 1e3 / per_request if per_request > 0 else math.inf


def rate_upper_bound(setup: SimSetup, sample: RequestSample) -> float:
    """Requests/s ``setup`` cannot exceed whatever the SLO (see the module docstring)."""
    totals = {"prefill": 0.0, "decode": 0.0, "colocated": 0.0}
    for inst in setup.instances:
        pp = inst.latency.pp
        if inst.role == "prefill":
            totals["prefill"] += _bound(prefill_work_ms(inst, sample), pp)
        elif inst.role == "decode":
            totals["decode"] += _bound(decode_work_ms(inst, sample), pp, pull_ms(inst, sample))
        else:
            totals["colocated"] += _bound(prefill_work_ms(inst, sample)
                                          + decode_work_ms(inst, sample), pp)
    mode = setup.mode
    if mode == "colocated":
        return totals["colocated"]
    if mode == "prefill-only":
        return totals["prefill"]
    if mode == "decode-only":
        return totals["decode"]
    return min(totals["prefill"], totals["decode"],
               network_rate_bound(setup, sample.mean_prompt))


def setup_rate(setup: SimSetup, sample: RequestSample, slo: SLO | None) -> float:
    """Estimated requests per second the whole setup serves within ``slo``."""
    totals = {"prefill": 0.0, "decode": 0.0, "colocated": 0.0}
    for inst in setup.instances:
        totals[inst.role] += instance_rate(inst, sample, slo)
    mode = setup.mode
    if mode == "colocated":
        return totals["colocated"]
    if mode == "prefill-only":
        return totals["prefill"]
    if mode == "decode-only":
        return totals["decode"]
    return min(totals["prefill"], totals["decode"],
               network_rate_bound(setup, sample.mean_prompt))
