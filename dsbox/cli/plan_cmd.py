"""``dsbox plan``: search the placement that maximises per-GPU goodput (DistServe Alg. 1/2).

Example::

    dsbox plan --model opt-66b --cluster 4x8 --profile a100-80g --workload sharegpt \\
        --slo chatbot-66b --algorithm low

prints the verdict first (``Best: disaggregated ... at X req/s/GPU, 1.12x colocated ...;
why: ...``), then the chosen disaggregated placement (placement text form), its per-GPU
goodput, the best colocated placement and its goodput, and the search time; ``--json``
prints one JSON object instead. While searching, a status line shows the stage, the
configurations tried and the best placement so far. The search settings
(``SearchSettings``) and the engine limits (``EngineLimits``) become options from their
dataclass fields (help: the field's trailing comment).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dsbox.cli.errors import fail
from dsbox.cli.options import with_dataclass_options

# --- the command ---------------------------------------------------------------------------


def _groups():
    from dsbox.placement.goodput import SearchSettings
    from dsbox.placement.sim_setup import EngineLimits

    return ((SearchSettings, "search_", "Search (SearchSettings)", ()),
            (EngineLimits, "limits_", "Simulated engine (EngineLimits)", ()))


def plan(
    model: Annotated[str, typer.Option(help="model registry name, e.g. opt-66b")] = "opt-13b",
    cluster: Annotated[str, typer.Option(help="NODESxGPUS, e.g. 1x8 or 4x8")] = "1x8",
    profile: Annotated[str, typer.Option(
        help="profile: built-in measured (a100-80g), a GPU of the table for a derived one "
             "(a100-40g, h100, h200, l40s, ...), or a profile file / directory from "
             "`dsbox profile`")] = "a100-80g",
    workload: Annotated[str, typer.Option(
        help="sharegpt | humaneval | longdoc | synthetic:PROMPT:OUTPUT")] = "sharegpt",
    slo: Annotated[str | None, typer.Option(
        help="preset (chatbot-13b, chatbot-66b, chatbot-175b, code-66b, "
             "summarization-66b) or 'TTFT,TPOT' in seconds; default: the model's preset "
             "in the registry")] = None,
    slo_scale: Annotated[float | None, typer.Option(
        help="SLO as this multiple of the profile's own single-request TTFT and TPOT "
             "(the x-axis of DistServe's Figure 8); instead of --slo")] = None,
    attainment: Annotated[float, typer.Option(help="share of requests that must meet the "
                                                   "SLO")] = 0.9,
    algorithm: Annotated[str, typer.Option(
        help="low: Alg. 2 (KV stays inside a node); high: Alg. 1 (any layout; starts "
             "from Alg. 2's answer)")] = "low",
    rate: Annotated[float | None, typer.Option(
        help="Alg. 1 only: size the instance counts for this traffic (req/s)")] = None,
    engine: Annotated[str | None, typer.Option(
        help="which fit of the profile (default: the profile's own)")] = None,
    colocated_engine: Annotated[str | None, typer.Option(
        help="fit for the colocated baseline (default: the same as the disaggregated "
             "side). 'vllm' compares with vLLM's slower engine as the DistServe paper "
             "does; on one engine fit colocated serving is close to (or above) "
             "disaggregated at the chatbot SLOs")] = None,
    nvlink_gbps: Annotated[float | None, typer.Option(
        help="link inside a node, GB/s per GPU per direction (default: the GPU's, "
             "300 for A100 NVLink)")] = None,
    network_gbps: Annotated[float, typer.Option(
        help="network between nodes, Gbit/s per node")] = 25.0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    *,
    groups: dict,
) -> None:
    """Search the best placement: disaggregated (Alg. 1/2) against colocated, same fit.

    Prints which mode wins, by how much and why, then both placements, their per-GPU
    goodput and the search time (``--json``: one JSON object)."""
    from dsbox.placement.cluster import ClusterSpec
    from dsbox.placement.goodput import SearchSettings
    from dsbox.placement.plan import ALGORITHMS, make_context, plan_search
    from dsbox.placement.sim_setup import EngineLimits

    if algorithm not in ALGORITHMS:
        raise fail(f"--algorithm must be one of {', '.join(ALGORITHMS)}")
    if slo is not None and slo_scale is not None:
        raise fail("give --slo or --slo-scale, not both")
    if slo_scale is not None and not slo_scale > 0:
        raise fail(f"--slo-scale must be > 0, got {slo_scale:g}")
    try:
        settings = SearchSettings(**groups["search_"])
        limits = EngineLimits(**groups["limits_"])
        cluster_spec = ClusterSpec.for_profile(
            cluster, profile, nvlink_bandwidth=None if nvlink_gbps is None else nvlink_gbps * 1e9,
            network_bandwidth=network_gbps * 1e9 / 8)
    except ValueError as exc:
        raise fail(str(exc)) from None
    status = Console(stderr=True, highlight=False)
    try:
        with status.status(f"loading workload {workload} and profile {profile} ...",
                           spinner="dots") as spin:
            def show(p) -> None:
                best = (f"best so far {p.best_per_gpu:.3f} req/s/GPU ({p.best_label})"
                        if p.best_label else "no placement meets the SLO yet")
                spin.update(f"{p.stage}: {p.tried} candidates tried, {p.simulations} "
                            f"simulations; {best}")

            ctx = make_context(model, cluster_spec, slo, workload, profile=profile,
                               settings=settings, limits=limits, engine=engine,
                               slo_scale=slo_scale, attainment=attainment, on_progress=show)
            spin.update(f"searching placements for {ctx.spec.name} on "
                        f"{cluster_spec.describe()} ...")
            result = plan_search(ctx, algorithm, rate, colocated_engine)
    except (ValueError, KeyError) as exc:
        raise fail(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from None
    except Exception as exc:  # a missing data package, for one
        if type(exc).__name__ == "MissingDataPackageError":
            raise fail(str(exc)) from None
        raise
    if as_json:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
        return
    _print(result)


def _print(result) -> None:
    out = Console(highlight=False)
    d, c = result.disaggregated, result.colocated
    out.print(f"[bold]{result.model}[/] on {result.cluster}, workload {result.workload}")
    out.print(f"SLO {result.slo}")
    if result.profile_note:
        out.print(f"[yellow]note:[/] {result.profile_note}")
    if result.verdict is not None:
        out.print()
        out.print(f"[bold]{result.verdict.headline()}[/]")
    label = {"low": "disaggregated (Alg. 2)", "high": "disaggregated (Alg. 1)"}[d.algorithm]
    for name, p in ((label, d), ("colocated (vLLM++)", c)):
        table = Table(show_header=False, box=None, padding=(0, 1), title_justify="left",
                      title=f"[bold]{name}[/]: {p.goodput_per_gpu:.3f} req/s per GPU "
                            f"({p.cluster_goodput:.2f} req/s on {p.placement.num_devices} GPUs)")
        table.add_column(style="dim", no_wrap=True)
        table.add_column(overflow="fold")
        table.add_row("unit", f"{p.unit.format(with_devices=False)} "
                              f"({p.unit_gpus} GPUs, {p.unit_goodput:.2f} req/s simulated)")
        table.add_row("placement", p.placement.format())
        out.print()
        out.print(table)
    out.print()
    ratio = "n/a (colocated serves nothing)" if c.goodput_per_gpu <= 0 else f"{result.ratio:.2f}x"
    out.print(f"per-GPU goodput, disaggregated / colocated: [bold]{ratio}[/]")
    out.print(f"search: {result.search_seconds:.1f} s, {result.num_simulations} simulations "
              f"of up to {result.num_requests} requests")
    for note in d.notes + c.notes:
        out.print(f"[yellow]note:[/] {note}")


def register(app: typer.Typer) -> None:
    app.command("plan")(with_dataclass_options(*_groups())(plan))
