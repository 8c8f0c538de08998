"""The colocated baseline with its parallelism searched (the paper's vLLM++).

Every feasible (TP, PP) of one colocated instance is simulated; the best per-GPU goodput
wins and is replicated over the cluster.
"""

from __future__ import annotations

from dsbox.placement.best import Option, pick_best
from dsbox.placement.context import PlanContext
from dsbox.placement.layout import first_fit
from dsbox.placement.plan_types import PhasePlan


def plan_colocated(ctx: PlanContext) -> PhasePlan:
    cluster = ctx.cluster
    configs = ctx.instance_configs(max_gpus=cluster.num_gpus)
    if not configs:
        raise ValueError(f"{ctx.spec.name} fits no colocated instance on {cluster.describe()}")
    options = [Option(cfg.instance("colocated").format(False),
                      first_fit([cfg.instance("colocated")], cluster), cfg)
               for cfg in configs]
    best = pick_best(ctx, options)
    if best.option is None:
        unit = options[0]
        return PhasePlan("colocated", unit.placement, 0.0, unit.placement, best.candidates,
                         ["no colocated configuration meets the SLO at any rate"])
    cfg = best.option.payload
    replicas = cluster.num_gpus // cfg.gpus
    placement = first_fit([cfg.instance("colocated")] * replicas, cluster)
    return PhasePlan("colocated", best.option.placement, best.goodput, placement,
                     best.candidates)
