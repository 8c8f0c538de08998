"""Back-of-envelope rate estimates of a setup, to seed and order the goodput search.

These are guesses, not bounds: they start the binary search near the answer (the search
brackets the true value by simulation either way) and order configurations so the best
ones are simulated first, which lets the rest stop after one probe.

- Prefill instance: ``pp`` batches in flight, one request per ``prefill_time(l)``; with a
  TTFT target, the M/D/1 load at which the mean TTFT reaches it.
- Decode instance: the largest batch whose step time stays within the TPOT target (and
  fits the KV pool and the batch cap), producing ``B / step_time`` tokens per second.
- Colocated instance: the two combined harmonically (it does both jobs).
"""

from __future__ import annotations

from dsbox.config.slo import SLO
from dsbox.placement.sim_types import SimInstance, SimSetup
from dsbox.placement.workload import RequestSample


def prefill_rate(inst: SimInstance, sample: RequestSample, slo: SLO | None) -> float:
    """Requests per second one prefill instance serves within the TTFT target."""
    lat = inst.latency
    overhead = lat.step_overhead(int(sample.mean_prompt))
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
        step = lat.decode_time(batch, context) + min(lat.pp, batch) * lat.step_overhead(
            context // min(lat.pp, batch))
        if slo is not None and step > slo.tpot and batch > 1:
            break
        best = max(best, batch / step)
    return best / tokens_per_request


def instance_rate(inst: SimInstance, sample: RequestSample, slo: SLO | None) -> float:
    if inst.role == "prefill":
        return prefill_rate(inst, sample, slo)
    if inst.role == "decode":
        return decode_rate(inst, sample, slo)
    p, d = prefill_rate(inst, sample, slo), decode_rate(inst, sample, slo)
    return 1.0 / (1.0 / max(p, 1e-9) + 1.0 / max(d, 1e-9))


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
    return min(totals["prefill"], totals["decode"])
