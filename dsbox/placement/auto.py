"""``--placement auto``: the placement to serve a model with on this machine, and why.

:func:`choose_placement` takes the model, the machine's device kind and count (``"h100"`` x
8, ``"cpu"`` x cores) and the SLO (default: the model's preset in the registry). With a
latency profile for the model on that device (given, a built-in or derived one for a GPU
of the table, or ``profiles/<device>/<model>.json`` as ``dsbox profile`` writes it) it
runs the planner on one node of ``count`` devices (Alg. 2, so KV stays on the machine)
and takes the better of disaggregated and colocated serving on the same engine fit, with
the planner's verdict as the reason. The search uses coarse settings
(:data:`AUTO_SETTINGS`: probes of at most 600 requests / 30 s of arrivals, a 5% rate
grid) so that it takes a few seconds at start-up; ``dsbox plan`` searches finer.

A model whose registry entry gives a ``placement`` (``models.toml``) gets that one, without
planning; the reason says that the registry chose it.

Without a profile, or when no placement meets the SLO on it, a default rule decides: one
prefill and one decode instance (TP 1 each) when there are at least two devices, else one
colocated instance; the reason says which rule chose it and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dsbox.config.model_spec import ModelSpec, get_model_spec
from dsbox.config.placement import Placement
from dsbox.config.slo import SLO
from dsbox.placement.cluster import ClusterSpec
from dsbox.placement.goodput import SearchSettings
from dsbox.placement.plan import make_context, plan_search
from dsbox.placement.profile_source import load_profile

AUTO_SETTINGS = SearchSettings(num_requests=600, min_requests=100, window=30.0,
                               tolerance=0.05)
PROFILE_DIR = Path("profiles")  # where ``dsbox profile`` writes by default
SOURCES = ("plan", "rule", "registry")


@dataclass(frozen=True, slots=True)
class PlacementChoice:
    """The placement ``--placement auto`` applies, and why."""

    placement: Placement
    mode: str                          # "disaggregated" or "colocated"
    reason: str
    source: str                        # "plan": searched on a profile; "rule": default
    #                                    rule; "registry": the model's models.toml entry
    disagg_goodput: float | None = None     # req/s per device, simulated
    colocated_goodput: float | None = None  # req/s per device, simulated
    ratio: float | None = None              # winner / other
    profile: str | None = None
    slo: str = ""
    search_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ("disaggregated", "colocated"):
            raise ValueError(f"mode must be disaggregated or colocated, got {self.mode!r}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")


def default_rule(count: int, why: str) -> PlacementChoice:
    """One prefill and one decode instance when there are two devices or more, else one
    colocated instance."""
    if count < 1:
        raise ValueError(f"need at least one device, got {count}")
    if count >= 2:
        placement = Placement.parse("prefill:tp=1;decode:tp=1")
        rule = (f"default rule: one prefill and one decode instance, as there are {count} "
                "devices (>= 2)")
        mode = "disaggregated"
    else:
        placement = Placement.parse("colocated:tp=1")
        rule = "default rule: one colocated instance, as there is one device"
        mode = "colocated"
    return PlacementChoice(placement, mode, f"{rule}; {why}", "rule")


def registry_choice(spec: ModelSpec) -> PlacementChoice | None:
    """The placement the model's registry entry gives (``placement`` in models.toml)."""
    if spec.default_placement is None:
        return None
    placement = Placement.parse(spec.default_placement)
    mode = "disaggregated" if placement.disaggregated else "colocated"
    return PlacementChoice(placement, mode,
                           f"the model registry: {spec.name}'s entry in models.toml gives "
                           f"placement = \"{placement.format()}\"", "registry")


def _find_profile(model: str, device: str, profile):
    """The profile to plan with, or (None, why not)."""
    if profile is not None:
        return load_profile(profile, model), ""
    tried = []
    local = PROFILE_DIR / device
    if (local / f"{model}.json").is_file():
        return load_profile(local, model), ""
    tried.append(str(local / f"{model}.json"))
    try:
        return load_profile(device, model), ""
    except ValueError:
        tried.append(f"a built-in or derived profile for {device!r}")
    return None, (f"no latency profile for {model} on {device} (looked for "
                  f"{' and '.join(tried)}; `dsbox profile {model}` measures one)")


def choose_placement(model: ModelSpec | str, device: str, count: int,
                     slo: SLO | str | None = None, profile=None, *,
                     workload: str = "sharegpt",
                     settings: SearchSettings = AUTO_SETTINGS,
                     lengths: list[tuple[int, int]] | None = None) -> PlacementChoice:
    """The placement for ``model`` on ``count`` devices of kind ``device`` (see the module
    docstring). ``profile``: a profile name, file or directory (default: looked up)."""
    spec = model if isinstance(model, ModelSpec) else get_model_spec(model)
    if count < 1:
        raise ValueError(f"need at least one device, got {count}")
    chosen = registry_choice(spec)
    if chosen is not None:
        return chosen
    prof, why_not = _find_profile(spec.name, device.strip().lower(), profile)
    if prof is None:
        return default_rule(count, why_not)
    cluster = ClusterSpec.for_profile(f"1x{count}", prof.device)
    ctx = make_context(spec.name, cluster, slo, workload, profile=prof, settings=settings,
                       lengths=lengths)
    if count < 2:  # one device: colocated is all there is
        from dsbox.placement.colocated import plan_colocated

        colocated = plan_colocated(ctx)
        if colocated.unit_goodput <= 0:
            return default_rule(count, f"no placement meets {ctx.slo.describe()} on "
                                       f"profile {prof.device}/{prof.model}")
        return PlacementChoice(colocated.placement, "colocated",
                               "one device: colocated serving is the only placement", "plan",
                               None, colocated.goodput_per_gpu, None, prof.device,
                               ctx.slo.describe())
    try:
        result = plan_search(ctx, "low")
    except ValueError as exc:  # no prefill + decode pair fits the machine
        return default_rule(count, f"the planner found no placement: {exc}")
    verdict = result.verdict
    if verdict is None or verdict.mode == "none":
        return default_rule(count, f"no placement meets {ctx.slo.describe()} on profile "
                                   f"{prof.device}/{prof.model}")
    d, c = result.disaggregated.goodput_per_gpu, result.colocated.goodput_per_gpu
    note = f" ({result.profile_note})" if result.profile_note else ""
    return PlacementChoice(verdict.placement, verdict.mode, verdict.headline() + note, "plan",
                           d, c, verdict.ratio, prof.device, result.slo,
                           result.search_seconds)
