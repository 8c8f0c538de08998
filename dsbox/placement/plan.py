"""``plan``: the disaggregated placement (Alg. 1 or Alg. 2) and the colocated baseline.

:func:`make_context` gathers the inputs by name (model, cluster, profile, workload, SLO);
:func:`plan_search` runs the chosen algorithm and the colocated search on the same request sample
and goodput cache, and times the whole search.
"""

from __future__ import annotations

import dataclasses
import time

from dsbox.config.model_spec import get_model_spec
from dsbox.config.slo import SLO
from dsbox.placement.alg_high import plan_high
from dsbox.placement.alg_low import plan_low
from dsbox.placement.cluster import ClusterSpec
from dsbox.placement.colocated import plan_colocated
from dsbox.placement.context import PlanContext
from dsbox.placement.goodput import SearchSettings
from dsbox.placement.plan_types import PlanResult
from dsbox.placement.profile_source import load_profile
from dsbox.placement.sim_setup import EngineLimits
from dsbox.placement.workload import sample_requests, workload_lengths

ALGORITHMS = ("low", "high")


def make_context(model: str, cluster: ClusterSpec | str, slo: SLO | str,
                 workload: str = "sharegpt", *, profile: str | None = None,
                 settings: SearchSettings | None = None, limits: EngineLimits | None = None,
                 engine: str | None = None, lengths: list[tuple[int, int]] | None = None
                 ) -> PlanContext:
    """A search context; ``lengths`` (prompt, output) pairs replace the named workload."""
    if isinstance(cluster, str):
        cluster = ClusterSpec.parse(cluster, profile=profile or "a100-80g")
    if isinstance(slo, str):
        slo = SLO.parse(slo)
    settings = settings or SearchSettings()
    spec = get_model_spec(model)
    prof = load_profile(profile or cluster.profile, spec.name)
    pairs = lengths if lengths is not None else workload_lengths(workload)
    limit = spec.max_position_embeddings
    pairs = [(p, o) for p, o in pairs if p + o <= limit]
    sample = sample_requests(pairs, settings.num_requests, settings.seed, name=workload)
    return PlanContext(spec, prof, cluster, slo, sample, settings,
                       limits or EngineLimits(), engine)


def plan_search(ctx: PlanContext, algorithm: str = "low", rate: float | None = None,
                colocated_engine: str | None = None) -> PlanResult:
    """Search the disaggregated placement (``low``: Alg. 2, ``high``: Alg. 1) and the
    colocated baseline (with ``colocated_engine``'s fit when given)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    start = time.perf_counter()
    colo_ctx = ctx
    if colocated_engine is not None and colocated_engine != ctx.engine:
        ctx.profile.engine(colocated_engine)  # fail early on an unknown fit
        colo_ctx = dataclasses.replace(ctx, engine=colocated_engine, search=None, _setups={})
    sims_before = ctx.search.stats.num_simulations + (
        colo_ctx.search.stats.num_simulations if colo_ctx is not ctx else 0)
    disaggregated = plan_low(ctx) if algorithm == "low" else plan_high(ctx, rate)
    colocated = plan_colocated(colo_ctx)
    sims = ctx.search.stats.num_simulations + (
        colo_ctx.search.stats.num_simulations if colo_ctx is not ctx else 0)
    return PlanResult(
        model=ctx.spec.name,
        cluster=ctx.cluster.describe(),
        profile=ctx.profile.device,
        workload=ctx.sample.name,
        slo=ctx.slo.describe(),
        disaggregated=disaggregated,
        colocated=colocated,
        search_seconds=time.perf_counter() - start,
        num_simulations=sims - sims_before,
        num_requests=len(ctx.sample),
    )
