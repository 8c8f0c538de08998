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

A pairing's unit is tried in every layout that fits: first the layouts that keep each
layer's KV inside a node (the prefill and decode stages of the same layers side by side,
Alg. 2's segments, for every node split both PPs allow), then first-fit, which may send KV
over the network. A layout's bound is the pairing's prediction and, when all of its KV
crosses nodes, what the node links carry (part of ``rate_upper_bound``; the simulator
makes such transfers take turns on a link). Layouts whose bound cannot beat the best are
not simulated.

Alg. 1 starts from Alg. 2's answer on the same cluster (a placement that keeps KV inside
nodes is a valid high-affinity placement), so it never answers worse than Alg. 2, and its
pruning has a real bar from the start: a slow network then costs a few early-stopped
simulations, not a search over units that all pay for KV over it.

To save simulations the phases are sized in two rounds: first the ``FIRST_LOOK`` configs
of each phase that look best per GPU (and their best pairing, verified), then the rest,
each dropped after one probe if its phase alone cannot reach what a pairing needs to beat
the best per-GPU goodput: with phase goodputs ``x`` and ``y`` per GPU a pairing serves at
most ``1 / (1/x + 1/y)`` per GPU, so with the other phase's best (plus the slack) known,
a config needs ``x >= 1 / (1/best - 1/y_best)`` (:func:`phase_floor`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dsbox.config.placement import Placement
from dsbox.placement.alg_low import plan_low
from dsbox.placement.context import ParallelConfig, PlanContext
from dsbox.placement.layout import first_fit, pair_layouts
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
        if math.isinf(floor_per_gpu):  # no pairing can beat the best: not simulated
            g = None
        else:
            g = ctx.search.goodput(setup, must_beat=floor_per_gpu * cfg.gpus,
                                   stride=PHASE_STRIDE)
        goodputs[cfg] = g or 0.0
        candidates.append(Candidate(f"{role}-only {cfg.instance(role).format(False)}",
                                    cfg.gpus, g, ctx.search.estimate(setup)))
        ctx.tried(candidates[-1].label, cfg.gpus, g, placement=False)
    return goodputs, candidates


def phase_floor(target: float, other_best: float) -> float:
    """The per-GPU goodput a config of one phase needs for a pairing to reach ``target``
    per GPU when the other phase serves at most ``other_best`` per GPU: a pairing's GPUs
    split between the phases, so its per-GPU goodput is at most ``1 / (1/x + 1/y)`` for
    phase goodputs ``x``, ``y`` per GPU (inf: out of reach)."""
    if target <= 0:
        return 0.0
    if other_best <= target:
        return math.inf
    return 1.0 / (1.0 / target - 1.0 / other_best)


def _best_per_gpu(goodputs: dict) -> float:
    return max((g / c.gpus for c, g in goodputs.items()), default=0.0)


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


def plan_high(ctx: PlanContext, rate: float | None = None,
              start: PhasePlan | None = None) -> PhasePlan:
    """Alg. 1 on ``ctx``; ``start``: Alg. 2's plan on the same context (searched here when
    not given; none when no Alg. 2 unit fits)."""
    cluster = ctx.cluster
    total = cluster.num_gpus
    configs = ctx.instance_configs(max_gpus=total)
    if not configs or 2 * min(c.gpus for c in configs) > total:
        raise ValueError(f"{ctx.spec.name}: a prefill and a decode instance do not fit "
                         f"{cluster.describe()}")
    low = start if start is not None else _try_low(ctx)
    best = _Verified()
    if low is not None and low.unit_goodput > 0:
        best.goodput, best.unit, best.placement = low.unit_goodput, low.unit, low.placement
        best.per_gpu = low.goodput_per_gpu
    # Stage 1: the few configs of each phase that look best per GPU, fully, and the best
    # pairing among them. Stage 2: the other configs, pruned against the best so far.
    g_p: dict = {}
    g_d: dict = {}
    candidates: list[Candidate] = []
    smallest = min(c.gpus for c in configs)
    configs = [c for c in configs if c.gpus + smallest <= total]  # room for the other phase
    order_p = _by_estimate(ctx, "prefill", configs)
    order_d = _by_estimate(ctx, "decode", configs)
    for stage_configs in ((order_p[:FIRST_LOOK], order_d[:FIRST_LOOK]), (order_p, order_d)):
        target = best.per_gpu / (1 + PREDICTION_SLACK)
        floor_p = floor_d = target
        if g_p and g_d:  # a pairing is at most the harmonic sum of its phases per GPU
            floor_p = phase_floor(target, _best_per_gpu(g_d) * (1 + PREDICTION_SLACK))
            floor_d = phase_floor(target, _best_per_gpu(g_p) * (1 + PREDICTION_SLACK))
        candidates += phase_goodputs(ctx, "prefill", stage_configs[0], floor_p, g_p)[1]
        candidates += phase_goodputs(ctx, "decode", stage_configs[1], floor_d, g_d)[1]
        known = [c for c in configs if c in g_p or c in g_d]
        ranked = pairings(known, {c: g_p.get(c, 0.0) for c in known},
                          {c: g_d.get(c, 0.0) for c in known}, total, rate)
        candidates += _verify(ctx, ranked, best, rate)
    if best.unit is None:
        cfg = configs[0]
        unit = first_fit([cfg.instance("prefill"), cfg.instance("decode")], cluster)
        return PhasePlan("high", unit, 0.0, unit, candidates,
                         ["no prefill + decode pairing meets the SLO at any rate"])
    notes = []
    if best.pair is None:
        candidates = (low.candidates if low is not None else []) + candidates
        notes.append("Alg. 2's placement (KV inside nodes) is the best found"
                     + ("; no placement that sends KV across nodes beat it"
                        if cluster.num_nodes > 1 else ""))
    else:
        pair = best.pair
        if pair.n_prefill * pair.prefill.gpus + pair.n_decode * pair.decode.gpus > total:
            notes.append(f"rate {rate} needs {pair.n_prefill} prefill + {pair.n_decode} "
                         f"decode instances, more than {cluster.describe()} holds")
    if ctx.setup(best.unit).crosses_network():
        notes.append(f"KV crosses nodes at {cluster.network_bandwidth * 8 / 1e9:g} Gbps per "
                     "node in this plan (see --network-gbps)")
    return PhasePlan("high", best.unit, best.goodput, best.placement, candidates, notes)


def _try_low(ctx: PlanContext) -> PhasePlan | None:
    try:
        return plan_low(ctx)
    except ValueError:  # no segment fits a node (an instance needs more than a node)
        return None


@dataclass(slots=True)
class _Verified:
    """The best unit simulated end to end so far (``pair`` None: Alg. 2's)."""

    pair: Pairing | None = None
    goodput: float = 0.0
    per_gpu: float = 0.0
    unit: Placement | None = None
    placement: Placement | None = None
    seen: set = field(default_factory=set)


def _verify(ctx: PlanContext, ranked: list[Pairing], best: _Verified,
            rate: float | None) -> list[Candidate]:
    """Simulate the layouts of ``ranked`` pairings' units (best prediction first) whose
    bound can beat ``best``, until no prediction can; updates ``best``."""
    candidates = []
    for pair in ranked:
        bound = pair.predicted_per_gpu * (1 + PREDICTION_SLACK)
        if bound < best.per_gpu:
            break
        for unit, segment in pair_layouts(pair.prefill, pair.decode, *pair.unit_counts,
                                          ctx.cluster):
            key = unit.format()
            if key in best.seen:
                continue
            best.seen.add(key)
            setup = ctx.setup(unit)
            gpus = unit.num_devices
            # a must_beat above the setup's rate bound (the node links', for one) fails
            # without a simulation
            goodput = ctx.search.goodput(setup, must_beat=ctx.search.bar(best.per_gpu, gpus))
            candidates.append(Candidate(unit.format(False), gpus, goodput,
                                        pair.predicted_per_gpu * gpus))
            ctx.tried(unit.format(False), gpus, goodput)
            if goodput is not None and goodput / gpus > best.per_gpu:
                best.pair, best.goodput, best.unit = pair, goodput, unit
                best.per_gpu = goodput / gpus
                best.placement = _cluster_placement(ctx, pair, segment, unit, rate)
    return candidates


def _cluster_placement(ctx: PlanContext, pair: Pairing, segment, unit: Placement,
                       rate: float | None) -> Placement:
    """The whole cluster's placement of a verified unit: its segments replicated, or the
    pairing's instance counts laid out first-fit (the unit itself if they do not fit)."""
    if segment is not None and rate is None:
        return segment.cluster_placement(ctx.cluster)
    try:
        return first_fit(pair.instances(pair.n_prefill, pair.n_decode), ctx.cluster)
    except ValueError:
        return unit
