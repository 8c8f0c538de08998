"""``plan``: the disaggregated placement (Alg. 1 or Alg. 2), the colocated baseline, and the
verdict between them.

:func:`make_context` gathers the inputs by name (model, cluster, profile, workload, SLO:
a preset, ``TTFT,TPOT``, the model's default from the registry, or a scale of the
profile's single-request latencies); :func:`plan_search` runs the chosen algorithm and the
colocated search on the same request sample and goodput cache, decides which serves more
per GPU (:mod:`dsbox.placement.verdict`), and times the whole search.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from dsbox.config.model_spec import ModelSpec, get_model_spec
from dsbox.config.slo import DEFAULT_ATTAINMENT, SLO
from dsbox.placement.alg_high import plan_high
from dsbox.placement.alg_low import plan_low
from dsbox.placement.cluster import ClusterSpec
from dsbox.placement.colocated import plan_colocated
from dsbox.placement.context import PlanContext, SearchProgress
from dsbox.placement.goodput import SearchSettings
from dsbox.placement.plan_types import PlanResult
from dsbox.placement.profile import LatencyProfile
from dsbox.placement.profile_source import load_profile
from dsbox.placement.sim_setup import EngineLimits
from dsbox.placement.slo_scale import scaled_slo
from dsbox.placement.verdict import decide
from dsbox.placement.workload import RequestSample, sample_requests, workload_lengths

ALGORITHMS = ("low", "high")
DEFAULT_PROFILE = "a100-80g"


def resolve_slo(spec: ModelSpec, slo: SLO | str | None, slo_scale: float | None,
                profile: LatencyProfile, sample: RequestSample, engine: str | None = None,
                attainment: float = DEFAULT_ATTAINMENT) -> SLO:
    """The SLO to plan for: ``slo`` (a preset name or ``TTFT,TPOT``), else ``slo_scale``
    times the profile's single-request latencies, else the model's registry default."""
    if slo is not None and slo_scale is not None:
        raise ValueError("give an SLO or an SLO scale, not both")
    if isinstance(slo, SLO):
        return slo
    if slo_scale is not None:
        return scaled_slo(profile, sample, slo_scale, engine, attainment)
    if slo is None:
        if spec.default_slo is None:
            raise ValueError(f"{spec.name} has no default SLO in the registry; give --slo "
                             "or --slo-scale")
        slo = spec.default_slo
    return SLO.parse(slo, attainment=attainment)


def make_context(model: str, cluster: ClusterSpec | str, slo: SLO | str | None = None,
                 workload: str = "sharegpt", *,
                 profile: str | LatencyProfile | None = None,
                 settings: SearchSettings | None = None, limits: EngineLimits | None = None,
                 engine: str | None = None, lengths: list[tuple[int, int]] | None = None,
                 slo_scale: float | None = None, attainment: float = DEFAULT_ATTAINMENT,
                 on_progress: Callable[[SearchProgress], None] | None = None
                 ) -> PlanContext:
    """A search context; ``profile``: a name, file or directory (default: the cluster's),
    or a loaded profile; ``lengths`` (prompt, output) pairs replace the named workload;
    ``slo`` None: ``slo_scale`` or the model's default (see :func:`resolve_slo`)."""
    spec = get_model_spec(model)
    if isinstance(profile, LatencyProfile):
        prof = profile
        if isinstance(cluster, str):
            cluster = ClusterSpec.for_profile(cluster, prof.device)
    else:
        if isinstance(cluster, str):
            cluster = ClusterSpec.for_profile(cluster, profile or DEFAULT_PROFILE)
        prof = load_profile(profile or cluster.profile, spec.name)
    settings = settings or SearchSettings()
    pairs = lengths if lengths is not None else workload_lengths(workload)
    limit = spec.max_position_embeddings
    pairs = [(p, o) for p, o in pairs if p + o <= limit]
    sample = sample_requests(pairs, settings.num_requests, settings.seed, name=workload)
    slo = resolve_slo(spec, slo, slo_scale, prof, sample, engine, attainment)
    return PlanContext(spec, prof, cluster, slo, sample, settings,
                       limits or EngineLimits(), engine, on_progress=on_progress)


def profile_note(profile: LatencyProfile) -> str:
    """What to say about a derived profile (empty for a measured one)."""
    if not profile.derived:
        return ""
    error = profile.provenance.get("derivation_error", {}).get("summary", "")
    return (f"profile derived for {profile.model} on {profile.device} by the analytic model "
            f"(nothing measured); {error}")


def plan_search(ctx: PlanContext, algorithm: str = "low", rate: float | None = None,
                colocated_engine: str | None = None) -> PlanResult:
    """Search the disaggregated placement (``low``: Alg. 2, ``high``: Alg. 1) and the
    colocated baseline (with ``colocated_engine``'s fit when given), and decide."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    start = time.perf_counter()
    colo_ctx = ctx
    if colocated_engine is not None and colocated_engine != ctx.engine:
        ctx.profile.engine(colocated_engine)  # fail early on an unknown fit
        colo_ctx = dataclasses.replace(ctx, engine=colocated_engine, search=None, _setups={})
    sims_before = ctx.search.stats.num_simulations + (
        colo_ctx.search.stats.num_simulations if colo_ctx is not ctx else 0)
    ctx.progress.stage = "disaggregated (Alg. 2)"
    low = plan_low(ctx) if algorithm == "low" else _low_or_none(ctx)
    if algorithm == "high":
        ctx.progress.stage = "disaggregated (Alg. 1)"
        disaggregated = plan_high(ctx, rate, start=low)
    else:
        disaggregated = low
    ctx.progress.stage = "colocated"
    colocated = plan_colocated(colo_ctx)
    ctx.progress.stage = "verdict"
    verdict = decide(ctx, disaggregated, colocated, colo_ctx)
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
        verdict=verdict,
        profile_note=profile_note(ctx.profile),
    )


def _low_or_none(ctx: PlanContext):
    try:
        return plan_low(ctx)
    except ValueError:  # no segment fits a node: Alg. 1 searches alone
        return None
