"""Alg. 1 (high node affinity): size each phase alone, then replicate to the traffic.

With a fast cross-node network, prefill and decode instances can go anywhere, so each
phase is sized on its own: the goodput of every prefill config in prefill-only
simulations (TTFT only; KV released at once) and of every decode config in decode-only
simulations (TPOT only; requests arrive prefilled). Replication then matches the phases:
``ceil(R / goodput)`` instances of each for a target rate ``R``, or else the counts that
fill the cluster with the most goodput.

On a finite cluster the best config of each phase may not fit beside the other, so every
(prefill, decode) pair is ranked by the per-GPU goodput its replication predicts, and the
smallest unit with the pair's prefill:decode ratio is simulated end to end (transfers
included), best-predicted first, until the prediction (with ``PREDICTION_SLACK``) falls
below the best verified per-GPU goodput. The verified goodput is what the plan reports.

To save simulations the phases are sized in two rounds: first the ``FIRST_LOOK`` configs
of each phase that look best per GPU (and their best pairing, verified), then the rest,
each dropped after one probe if its phase alone cannot reach that pairing's per-GPU
goodput (no pairing can beat either of its phases per GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dsbox.placement.context import ParallelConfig, PlanContext
from dsbox.placement.layout import first_fit
from dsbox.placement.plan_types import Candidate, PhasePlan

PREDICTION_SLACK = 0.1  # a phase-only prediction may undershoot the end-to-end goodput
FIRST_LOOK = 3          # configs per phase sized in full before the others are pruned
PHASE_STRIDE = 3        # phase-only goodputs (for ranking) on every 3rd rate of the grid


@dataclass(frozen=True, slots=True)
class Pairing:
    """A prefill config and a decode config, their counts on the cluster, and the unit."""

    prefill: ParallelConfig
    decode: ParallelConfig
    n_prefill: int
    n_decode: int
    predicted_per_gpu: float

    @property
    def unit_counts(self) -> tuple[int, int]:
        g = math.gcd(self.n_prefill, self.n_decode)
        return self.n_prefill // g, self.n_decode // g

    def instances(self, n_prefill: int, n_decode: int) -> list:
        return ([self.prefill.instance("prefill")] * n_prefill
                + [self.decode.instance("decode")] * n_decode)


def phase_goodputs(ctx: PlanContext, role: str, configs: list[ParallelConfig],
                   floor_per_gpu: float = 0.0, into: dict | None = None
                   ) -> tuple[dict[ParallelConfig, float], list[Candidate]]:
    """Goodput (req/s) of configs of one phase alone. With ``floor_per_gpu`` a config
    that cannot reach that per-GPU goodput stops after one probe and counts as 0 (no
    pairing with it can beat the floor: a pairing's per-GPU goodput is at most each of
    its phases' per-GPU goodputs)."""
    goodputs = {} if into is None else into
    candidates = []
    for cfg in configs:
        if cfg in goodputs:
            continue
        setup = ctx.phase_setup(role, cfg)
        g = ctx.search.goodput(setup, must_beat=floor_per_gpu * cfg.gpus, stride=PHASE_STRIDE)
        goodputs[cfg] = g or 0.0
        candidates.append(Candidate(f"{role}-only {cfg.instance(role).format(False)}",
                                    cfg.gpus, g, ctx.search.estimate(setup)))
    return goodputs, candidates


def _by_estimate(ctx: PlanContext, role: str, configs: list[ParallelConfig]) -> list:
    est = {c: ctx.search.estimate(ctx.phase_setup(role, c)) / c.gpus for c in configs}
    return sorted(configs, key=lambda c: (-est[c], c.gpus))


def replicas(g_p: float, gpus_p: int, g_d: float, gpus_d: int, total: int,
             rate: float | None) -> tuple[int, int]:
    """Prefill and decode instance counts: enough for ``rate``, else the most goodput
    within ``total`` GPUs (ties: fewer GPUs)."""
    if rate is not None:
        return max(1, math.ceil(rate / g_p)), max(1, math.ceil(rate / g_d))
    best = None
    for n_p in range(1, (total - gpus_d) // gpus_p + 1):
        n_d = (total - n_p * gpus_p) // gpus_d
        key = (min(n_p * g_p, n_d * g_d), -(n_p * gpus_p + n_d * gpus_d))
        if best is None or key > best[0]:
            best = (key, n_p, n_d)
    if best is None:
        raise ValueError("one prefill and one decode instance do not fit the cluster")
    # drop instances the other phase cannot feed
    _, n_p, n_d = best
    served = min(n_p * g_p, n_d * g_d)
    return max(1, math.ceil(served / g_p - 1e-9)), max(1, math.ceil(served / g_d - 1e-9))


def pairings(configs: list[ParallelConfig], g_p: dict, g_d: dict, total: int,
             rate: float | None) -> list[Pairing]:
    """Every (prefill, decode) pair that serves something, best prediction first."""
    out = []
    for p in configs:
        for d in configs:
            if g_p[p] <= 0 or g_d[d] <= 0 or p.gpus + d.gpus > total:
                continue
            n_p, n_d = replicas(g_p[p], p.gpus, g_d[d], d.gpus, total, rate)
            served = min(n_p * g_p[p], n_d * g_d[d])
            out.append(Pairing(p, d, n_p, n_d, served / (n_p * p.gpus + n_d * d.gpus)))
    out.sort(key=lambda x: (-x.predicted_per_gpu, x.prefill.gpus + x.decode.gpus))
    return out


def plan_high(ctx: PlanContext, rate: float | None = None) -> PhasePlan:
    cluster = ctx.cluster
    total = cluster.num_gpus
    configs = ctx.instance_configs(max_gpus=total)
    if not configs or 2 * min(c.gpus for c in configs) > total:
        raise ValueError(f"{ctx.spec.name}: a prefill and a decode instance do not fit "
                         f"{cluster.describe()}")
    # Stage 1: the few configs of each phase that look best per GPU, fully, and the best
    # pairing among them. Stage 2: the other configs, pruned against that pairing.
    g_p: dict = {}
    g_d: dict = {}
    candidates: list[Candidate] = []
    smallest = min(c.gpus for c in configs)
    configs = [c for c in configs if c.gpus + smallest <= total]  # room for the other phase
    order_p = _by_estimate(ctx, "prefill", configs)
    order_d = _by_estimate(ctx, "decode", configs)
    best = _Verified()
    for stage_configs in ((order_p[:FIRST_LOOK], order_d[:FIRST_LOOK]), (order_p, order_d)):
        floor = best.per_gpu / (1 + PREDICTION_SLACK)
        candidates += phase_goodputs(ctx, "prefill", stage_configs[0], floor, g_p)[1]
        candidates += phase_goodputs(ctx, "decode", stage_configs[1], floor, g_d)[1]
        known = [c for c in configs if c in g_p or c in g_d]
        ranked = pairings(known, {c: g_p.get(c, 0.0) for c in known},
                          {c: g_d.get(c, 0.0) for c in known}, total, rate)
        candidates += _verify(ctx, ranked, best)
    best_pair, best_goodput, best_unit = best.pair, best.goodput, best.unit
    if best_pair is None:
        cfg = configs[0]
        unit = first_fit([cfg.instance("prefill"), cfg.instance("decode")], cluster)
        return PhasePlan("high", unit, 0.0, unit, candidates,
                         ["no prefill + decode pairing meets the SLO at any rate"])
    notes = []
    n_p, n_d = best_pair.n_prefill, best_pair.n_decode
    if n_p * best_pair.prefill.gpus + n_d * best_pair.decode.gpus > total:
        notes.append(f"rate {rate} needs {n_p} prefill + {n_d} decode instances, more than "
                     f"{cluster.describe()} holds")
    setup = ctx.setup(best_unit)
    if any(bw <= cluster.network_bandwidth for row in setup.bandwidth for bw in row):
        notes.append(f"KV crosses nodes at {cluster.network_bandwidth / 1e9:g} GB/s in this "
                     "plan; Alg. 1 assumes a fast network (see --network-gbps)")
    try:
        placement = first_fit(best_pair.instances(n_p, n_d), cluster)
    except ValueError:
        placement = best_unit
    return PhasePlan("high", best_unit, best_goodput, placement, candidates, notes)


@dataclass(slots=True)
class _Verified:
    """The best pairing simulated end to end so far."""

    pair: Pairing | None = None
    goodput: float = 0.0
    per_gpu: float = 0.0
    unit: object = None
    seen: set = field(default_factory=set)


def _verify(ctx: PlanContext, ranked: list[Pairing], best: _Verified) -> list[Candidate]:
    """Simulate the units of ``ranked`` pairings (best prediction first) until the
    prediction cannot beat ``best``; updates ``best``."""
    candidates = []
    for pair in ranked:
        if best.pair is not None and pair.predicted_per_gpu * (1 + PREDICTION_SLACK) \
                < best.per_gpu:
            break
        try:
            unit = first_fit(pair.instances(*pair.unit_counts), ctx.cluster)
        except ValueError:
            continue
        if unit.format() in best.seen:
            continue
        best.seen.add(unit.format())
        goodput = ctx.search.goodput(ctx.setup(unit), must_beat=best.per_gpu * unit.num_devices)
        candidates.append(Candidate(unit.format(False), unit.num_devices, goodput,
                                    pair.predicted_per_gpu * unit.num_devices))
        if goodput is not None and goodput / unit.num_devices > best.per_gpu:
            best.pair, best.goodput, best.unit = pair, goodput, unit
            best.per_gpu = goodput / unit.num_devices
    return candidates
