"""Alg. 2 (low node affinity): a stage's prefill and decode segments share a node.

The cluster has fast NVLink inside a node and a slow network between nodes, so KV must
not cross nodes. The model is cut into ``pp_cross`` node stages (``pp_cross`` <= nodes);
node ``c`` of a unit holds stage ``c`` of all the unit's prefill and decode instances, and
inside the node each phase has its own TP (and optionally more PP). The search enumerates
``pp_cross``, the two phases' intra-node configs and their instance counts per node
(``n_prefill`` : ``n_decode`` coprime, the segment within one node), simulates each unit
end to end (prefill, NVLink KV transfer, decode) and keeps the best per-GPU goodput; the
unit is then replicated over the cluster.
"""

from __future__ import annotations

import math

from dsbox.placement.best import Option, pick_best
from dsbox.placement.context import PlanContext, divisors
from dsbox.placement.layout import SegmentUnit
from dsbox.placement.plan_types import PhasePlan


def enumerate_units(ctx: PlanContext) -> list[SegmentUnit]:
    """Every Alg. 2 unit that fits the cluster and the model."""
    cluster, spec = ctx.cluster, ctx.spec
    m = cluster.gpus_per_node
    units = []
    for pp_cross in divisors(spec.num_layers):
        if pp_cross > cluster.num_nodes:
            break
        configs = ctx.instance_configs(max_gpus=m, max_tp=m, pp_multiple=pp_cross)
        for p in configs:
            for d in configs:
                for n_p in range(1, (m - d.gpus) // p.gpus + 1):
                    for n_d in range(1, (m - n_p * p.gpus) // d.gpus + 1):
                        if math.gcd(n_p, n_d) == 1:
                            units.append(SegmentUnit(pp_cross, p, n_p, d, n_d))
    return units


def plan_low(ctx: PlanContext) -> PhasePlan:
    units = enumerate_units(ctx)
    if not units:
        raise ValueError(f"{ctx.spec.name}: no prefill + decode segment fits a node of "
                         f"{ctx.cluster.describe()}")
    options = [Option(u.describe(), u.unit_placement(ctx.cluster), u) for u in units]
    best = pick_best(ctx, options)
    if best.option is None:
        unit = options[0]
        return PhasePlan("low", unit.placement, 0.0, unit.placement, best.candidates,
                         ["no disaggregated unit meets the SLO at any rate"])
    chosen: SegmentUnit = best.option.payload
    return PhasePlan("low", best.option.placement, best.goodput,
                     chosen.cluster_placement(ctx.cluster), best.candidates)
