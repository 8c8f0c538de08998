"""``dsbox bench``: SLO attainment, goodput and latency breakdown on real prompts.

Replays a workload (ShareGPT, HumanEval, long documents; Poisson arrivals at each rate) or a
recorded trace on the engine here (one or several placements), through the simulator
(``--simulate``: beside the real run, or alone on a profile with no weights or device), or
against an OpenAI-compatible server (``--endpoint``). Prints the ``vllm bench serve`` block
per run and the attainment, goodput and breakdown tables; ``--json`` writes every figure and
each request's stamps, ``--plots`` the figures. Examples::

    dsbox bench --workload sharegpt --rates 1,2,4 --compare colocated --simulate \\
        --json bench.json --plots plots/
    dsbox bench --simulate --profile a100-80g --model opt-66b \\
        --placement "prefill:tp=4;decode:tp=2,pp=2" --trace t.csv --ttft 0.4 --tpot 0.1
    dsbox bench --endpoint http://127.0.0.1:8000 --workload humaneval --rates 2

Bad input (an unknown workload, a rate <= 0, a malformed trace, an unreachable endpoint, a
missing data package) ends in one ``error:`` line and exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from dsbox.cli.errors import fail, user_errors
from dsbox.cli.options import engine_options
from dsbox.config import DEFAULT_MODEL


class RichProgress:
    """The runner's progress as rich bars on stderr; each finished run's block on stdout."""

    def __init__(self, progress: Progress, out: Console) -> None:
        self.bars = progress
        self.out = out
        self._status = progress.add_task("", total=None, visible=False)
        self._run = None

    def status(self, text: str) -> None:
        self.bars.update(self._status, description=text, visible=True)

    def start_run(self, label: str, total: int) -> None:
        self.bars.update(self._status, visible=False)
        self._run = self.bars.add_task(label, total=total)

    def advance(self, done: int) -> None:
        if self._run is not None:
            self.bars.update(self._run, completed=done)

    def end_run(self, run, probe: bool = False) -> None:
        from dsbox.bench.summary import print_run

        if self._run is not None:
            self.bars.remove_task(self._run)
            self._run = None
        if run is not None and probe:
            self.out.print(f"goodput search: {run.label}: SLO attainment "
                           f"{run.report.slo_attainment:.1%}")
        elif run is not None:
            print_run(self.out, run)


def _spec(model: str):
    from dsbox.config import ModelSpec, get_model_spec

    path = Path(model)
    return ModelSpec.from_hf_dir(path) if path.is_dir() else get_model_spec(model)


def _profile(name: str | None, model: str, spec, engine_kwargs: dict, console: Console):
    """(profile, where): ``--profile``, else this machine's, measured first when missing."""
    from dsbox.bench.profiles import find_profile, measure_profile

    profile, where = find_profile(name, spec.name)
    if profile is not None:
        return profile, where
    console.print(f"no latency profile of {spec.name} on this machine: measuring one "
                  f"(dsbox profile's quick grid) into {where}")
    columns = (TextColumn("[bold]profiling[/] {task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("", total=None)
        profile = measure_profile(
            engine_kwargs, model, Path(where),
            progress=lambda d, t, label: bar.update(task, completed=d, total=t,
                                                    description=label))
    return profile, where


def bench(
    model: Annotated[str, typer.Option(
        help="registry name (see `dsbox models`) or checkpoint directory")] = DEFAULT_MODEL,
    workload: Annotated[str, typer.Option(
        help="sharegpt | humaneval | longdoc (lengths from the model's tokenizer)")
    ] = "sharegpt",
    trace: Annotated[Path | None, typer.Option(
        help="replay a recorded trace: CSV arrival_time_s,input_len,output_len, or JSONL "
             "(input_len or prompt text)")] = None,
    num_requests: Annotated[int, typer.Option(
        help="requests drawn from the workload per run")] = 100,
    rates: Annotated[str | None, typer.Option(
        help="requests/s: one (2), a list (1,1.5,2) or a sweep START:STOP:STEP; a trace "
             "without --rates replays as recorded")] = None,
    seed: Annotated[int, typer.Option(help="seed of the request draw and the arrivals")] = 0,
    placement: Annotated[list[str] | None, typer.Option(
        help="auto, or placement text such as 'prefill:tp=1;decode:tp=1' (repeatable)")
    ] = None,
    compare: Annotated[str | None, typer.Option(
        help="colocated: also run each placement's counterpart in the other mode on as "
             "many devices (a disaggregated placement's colocated twin, a colocated one's "
             "disaggregated split), so both modes are measured")] = None,
    simulate: Annotated[bool, typer.Option(
        "--simulate", help="also (or only) run the trace through the simulator")] = False,
    real: Annotated[bool | None, typer.Option(
        "--real/--no-real", help="run the engine here (default: yes, unless --simulate is "
                                 "given a profile of another device)")] = None,
    profile: Annotated[str | None, typer.Option(
        help="simulator profile: built-in name (a100-80g), file or directory (default: "
             "profiles/<this device>/<model>.json, measured first if missing)")] = None,
    engine_fit: Annotated[str | None, typer.Option(
        help="which engine's fit of the profile the simulator uses (distserve | vllm; "
             "default: the profile's)")] = None,
    endpoint: Annotated[str | None, typer.Option(
        help="an OpenAI-compatible server to measure instead of the engine here")] = None,
    served_model: Annotated[str | None, typer.Option(
        help="the model name to ask the endpoint for (default: the first it lists)")] = None,
    slo: Annotated[str | None, typer.Option(
        help="SLO preset (chatbot-13b, ...) or 'TTFT,TPOT' in seconds (default: the "
             "model's, else chatbot-13b)")] = None,
    ttft: Annotated[float | None, typer.Option(help="TTFT target, seconds")] = None,
    tpot: Annotated[float | None, typer.Option(help="TPOT target, seconds")] = None,
    slo_scale: Annotated[float, typer.Option(help="multiply both SLO targets")] = 1.0,
    attainment: Annotated[float, typer.Option(
        help="share of requests that must meet the SLO (goodput's target)")] = 0.9,
    goodput_probes: Annotated[int, typer.Option(
        help="extra runs per real/endpoint target for the goodput binary search")] = 2,
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="write every figure and each request's stamps here")] = None,
    plots: Annotated[Path | None, typer.Option(help="write the PNG figures here")] = None,
    *,
    engine_kwargs: dict,
) -> None:
    """Measure SLO attainment, goodput and the latency breakdown on real prompts."""
    from dsbox.bench.placements import bench_placements
    from dsbox.bench.profiles import machine_device_slug
    from dsbox.bench.rates import parse_rates
    from dsbox.bench.runner import BenchPlan, BenchRunner
    from dsbox.bench.slo import resolve_slo
    from dsbox.bench.workload import load_bench_workload
    from dsbox.devices import discover_devices
    from dsbox.engine.model.tokenizer import bundled_tokenizer
    from dsbox.workloads import MissingDataPackageError

    err = Console(stderr=True, highlight=False)
    out = Console(highlight=False)
    with user_errors():
        spec = _spec(model)
        rate_list = parse_rates(rates) if rates is not None else ()
        if trace is None and not rate_list:
            raise ValueError("give --rates (requests/s) for a workload, or a --trace")
        if endpoint and real:
            raise ValueError("--endpoint measures a server; it excludes --real")
        if (profile or engine_fit) and not simulate:
            raise ValueError("--profile and --engine-fit are for --simulate")
        if endpoint and compare:
            raise ValueError("--compare needs the engine here or the simulator; an endpoint "
                             "runs one placement")
        target_slo = resolve_slo(spec, slo, ttft, tpot, slo_scale, attainment)
        max_len = engine_kwargs.get("max_model_len") or spec.max_position_embeddings
        try:  # bad input fails here, before any engine starts (lengths only: fast)
            checked = load_bench_workload(workload, trace, bundled_tokenizer(),
                                          num_requests=num_requests, seed=seed,
                                          with_text=False, max_model_len=max_len)
        except MissingDataPackageError as exc:
            raise fail(str(exc)) from None
        if not (endpoint or simulate or real is not False):
            raise ValueError("--no-real without --simulate or --endpoint runs nothing")
        prof = where = None
        if simulate:
            prof, where = _profile(profile, model, spec, engine_kwargs, err)
            prof.engine(engine_fit)  # ValueError naming the fits it has
        here = prof is not None and prof.device == machine_device_slug()
        if endpoint:
            real = False
        elif real is None:
            real = not simulate or profile is None or here
        devices = discover_devices(engine_kwargs.get("device", "auto"))
        placements = bench_placements(placement or [], spec, devices, compare,
                                      slo=target_slo, profile=where if here else None)
        if endpoint and len(placements) > 1:
            raise ValueError("an endpoint runs one placement; give one --placement")
        plan = BenchPlan(model=model, spec=spec, placements=placements, rates=rate_list,
                         slo=target_slo, engine_kwargs=dict(engine_kwargs, seed=seed),
                         real=bool(real), endpoint=endpoint, served_model=served_model,
                         simulate=simulate, profile=prof, profile_name=where,
                         engine_fit=engine_fit, goodput_probes=goodput_probes)

    def load(tokenizer, with_text: bool):
        if tokenizer is None and not with_text:
            return checked
        return load_bench_workload(workload, trace, tokenizer or bundled_tokenizer(),
                                   num_requests=num_requests, seed=seed, with_text=with_text,
                                   max_model_len=max_len)

    err.print(f"[bold]{spec.name}[/]: {', '.join(p.text for p in placements)}; SLO "
              f"{target_slo.describe()}")
    for p in placements:
        err.print(f"  {p.text}: {p.rule}")
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())
    runner = None
    try:
        with user_errors(), Progress(*columns, console=err, transient=True) as bars:
            runner = BenchRunner(plan, load, RichProgress(bars, out))
            result = runner.run()
    except MissingDataPackageError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        # Ctrl-C: the runs that finished are reported and written as usual, then exit 130
        result = runner.result if runner is not None else None
        if result is None or not result.runs:
            raise
        result.interrupted = True
        n = len(result.runs)
        err.print(f"[yellow]interrupted[/] after {n} run{'s' * (n != 1)}: the summary, "
                  "--json and --plots hold what finished")
        result.notes.append("interrupted (Ctrl-C): only the runs that finished are here; "
                            "a goodput search in progress is left out")
    if prof is not None:
        result.notes.append(_profile_note(prof, where, prof.engine(engine_fit)))
    from dsbox.bench.summary import print_summary

    print_summary(out, result)
    if json_path is not None:
        result.write_json(json_path)
        out.print(f"wrote {json_path}")
    if plots is not None:
        from dsbox.bench.plots import write_plots

        for path in write_plots(result, plots):
            out.print(f"wrote {path}")
    if result.interrupted:
        raise typer.Exit(130)


def _profile_note(prof, where: str, fit: str) -> str:
    text = (f"simulated on profile {where} ({prof.model} on {prof.device_name or prof.device}, "
            f"{fit}'s fit)")
    pre, dec = prof.prefill_overhead, prof.decode_overhead
    text += f"; runtime overhead per step: prefill {pre.describe()}, decode {dec.describe()}"
    pull = prof.pull_overhead
    if pull.ms or pull.ms_per_token:
        text += f"; KV pull on the decode worker {pull.describe_pull()}"
    return text


def register(app: typer.Typer) -> None:
    app.command("bench")(engine_options(exclude=("model", "placement", "seed"))(bench))
