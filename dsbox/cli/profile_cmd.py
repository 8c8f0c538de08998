"""``dsbox profile MODEL``: measure the engine's step times here and write a latency profile.

Builds the in-process engine for MODEL (dummy weights of the real shapes; engine options
from ``EngineConfig``), times prefill steps over batch x prompt length and decode steps
over batch x context with a progress bar, fits DistServe's step-time model (least squares
on relative error), reports how well the fit predicts held-out steps and the prefill token
budget L_m; with ``--tp 1,2,...`` each TP > 1 the same way on a TP group of the runtime's
worker processes (:mod:`dsbox.placement.tp_profiler`). Then it starts the real engine
under a serving placement (``--placement``; default disaggregated on two devices or cores
where there are two, else colocated), sends lone requests one at a time and fits the
runtime's own cost per prefill and per decode step (scheduling, IPC, batch building:
measured minus the fit's model time), then bursts of requests whose every step the engine
logs, for the part of that cost that grows with the batch (see
:mod:`dsbox.placement.overhead`), so the
simulator predicts this runtime. It writes
``profiles/<device>/<model>.json`` (or ``--output``), which ``dsbox plan --profile
profiles/<device>`` reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dsbox.cli.errors import fail
from dsbox.cli.options import engine_options


def profile(
    model: Annotated[str, typer.Argument(help="registry name (see `dsbox models`)")],
    output: Annotated[Path | None, typer.Option(
        help="profile file to write (default: profiles/<device>/<model>.json)")] = None,
    device_name: Annotated[str | None, typer.Option(
        help="device kind in the profile (default: from the device's name)")] = None,
    quick: Annotated[bool, typer.Option(
        "--quick/--full", help="small grid (CPU, tests) or the full grid")] = False,
    repeats: Annotated[int | None, typer.Option(
        help="timed runs per shape (their median counts); default: the grid's")] = None,
    threads: Annotated[int | None, typer.Option(
        help="torch CPU threads while measuring (1 is steadiest on a busy machine)")] = None,
    tp: Annotated[str, typer.Option(
        help="TP degrees to fit, comma-separated (e.g. 1,2): TP 1 in this process (always), "
             "each TP > 1 on a TP group of the runtime's worker processes (one per device "
             "or CPU core; gloo on the CPU)")] = "1",
    overhead: Annotated[bool, typer.Option(
        "--overhead/--no-overhead",
        help="after the fit, measure the serving runtime's own cost per prefill and decode "
             "step (lone requests and bursts on the real engine; measured minus the fit) "
             "and put it in the profile")] = True,
    placement: Annotated[str | None, typer.Option(
        help="placement the runtime overhead is measured under (default: "
             "'prefill:tp=1;decode:tp=1' with >= 2 devices or cores, else "
             "'colocated:tp=1')")] = None,
    *,
    engine_kwargs: dict,
) -> None:
    """Measure MODEL's prefill and decode step times and fit a latency profile, then the
    serving runtime's own cost per prefill and decode step: lone requests and bursts on
    the running engine under --placement (a progress bar for each)."""
    import dataclasses

    from dsbox.engine.model.source import ModelNotFoundError
    from dsbox.placement.profiler import ProfileGrid, profile_engine

    try:
        tps = sorted({int(t) for t in tp.split(",") if t.strip()} | {1})
    except ValueError:
        raise fail(f"--tp takes comma-separated integers, got {tp!r}") from None
    if tps[0] < 1:
        raise fail(f"--tp degrees must be >= 1, got {tp!r}")
    grid = ProfileGrid.quick() if quick else ProfileGrid()
    if repeats is not None:
        try:
            grid = dataclasses.replace(grid, repeats=repeats)
        except ValueError as exc:
            raise fail(str(exc)) from None
    console = Console(stderr=True, highlight=False)
    try:
        with console.status(f"building the engine for {model} ..."):
            from dsbox.config import EngineConfig
            from dsbox.placement.profiler import ProfilingTarget

            engine = ProfilingTarget(EngineConfig(model=model, dummy_weights=True,
                                                  **engine_kwargs))
    except ModelNotFoundError as exc:
        raise fail(str(exc)) from None
    except (ValueError, KeyError) as exc:
        raise fail(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from None
    columns = (TextColumn("[bold]profiling[/] {task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("", total=None)

        def progress(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=label)

        try:
            run = profile_engine(engine, grid, device=device_name, progress=progress,
                                 threads=threads)
        except ValueError as exc:
            raise fail(str(exc)) from None
    prof = run.profile
    del engine  # the worker processes need the device memory
    config = EngineConfig(model=model, dummy_weights=True, **{
        **engine_kwargs, "num_threads": engine_kwargs.get("num_threads") or threads})
    for degree in tps[1:]:
        _measure_tp(console, config, prof, degree, grid)
    measured = None
    if overhead:
        measured = _measure_overhead(console, config, prof, placement)
    path = output or Path("profiles") / prof.device / f"{prof.model}.json"
    prof.save(path)
    _report(run, path, measured)


def _measure_tp(console: Console, config, prof, degree: int, grid) -> None:
    """Fit TP ``degree`` on a group of worker processes into ``prof``."""
    import gc

    from dsbox.engine.runtime.launch import EngineStartupError
    from dsbox.placement.profiler import add_tp_fit, profile_tp

    gc.collect()
    columns = (TextColumn(f"[bold]profiling TP {degree}[/] {{task.description}}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(f"starting {degree} worker processes", total=None)

        def progress(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=label)

        try:
            fit, record = profile_tp(config, degree, grid, progress)
        except (ValueError, RuntimeError, EngineStartupError) as exc:
            raise fail(f"TP {degree}: {exc}") from None
    add_tp_fit(prof, degree, fit, record)


def _measure_overhead(console: Console, config, prof, placement: str | None):
    """Fit the runtime's per-step overheads into ``prof`` (see the module docstring)."""
    import gc

    from dsbox.devices import discover_devices
    from dsbox.placement.overhead import OverheadProbe, default_placement, measure_engine_overhead

    gc.collect()
    try:
        probe = OverheadProbe(placement=placement or default_placement(
            discover_devices(config.device).count))
    except ValueError as exc:
        raise fail(str(exc)) from None
    columns = (TextColumn("[bold]runtime overhead[/] {task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(f"starting the engine: {probe.placement}", total=None)

        def progress(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=label)

        def status(stage: str) -> None:
            bar.update(task, description=f"starting the engine: {probe.placement}: {stage}")

        try:
            run = measure_engine_overhead(config, prof.fit(1), probe, progress, status)
        except ValueError as exc:
            raise fail(str(exc)) from None
    prof.prefill_overhead, prof.decode_overhead = run.prefill, run.decode
    prof.pull_overhead = run.pull
    prof.provenance["step_overhead"] = run.provenance()
    return run


def _report(run, path: Path, overhead=None) -> None:
    out = Console(highlight=False)
    prof = run.profile
    fit = prof.fit(1)
    out.print(f"[bold]{prof.model}[/] on {prof.device_name} ({prof.dtype}), TP 1: "
              f"{len(prof.measurements)} shapes measured")
    table = Table(title="step time (ms) = a + b*x + c*y", title_justify="left")
    for col in ("step", "a", "b", "c", "x, y"):
        table.add_column(col, justify="left" if col in ("step", "x, y") else "right")
    rows = (("prefill", fit.prefill, "sum(l), sum(l^2)"),
            (f"decode B < {fit.decode_threshold}", fit.decode_small, "sum(ctx), B"),
            (f"decode B >= {fit.decode_threshold}", fit.decode_large, "sum(ctx), B"))
    for name, (a, b, c), xy in rows:
        table.add_row(name, f"{a:.4g}", f"{b:.4g}", f"{c:.4g}", xy)
    out.print(table)
    out.print(f"prefill token budget L_m: [bold]{prof.token_budget(1)}[/] tokens "
              "(throughput stops growing past it)")
    out.print(f"held-out median relative error: [bold]{run.held_out_error:.1%}[/] "
              f"(prefill {run.prefill_error:.1%}, decode {run.decode_error:.1%}, "
              f"{len(run.held_out)} shapes not used by the fit)")
    for degree, rec in sorted(prof.provenance.get("tp", {}).items(), key=lambda x: int(x[0])):
        fit_tp = prof.fit(int(degree))
        out.print(f"TP {degree} (worker processes): prefill {_coeff_text(fit_tp.prefill)}, "
                  f"decode {_coeff_text(fit_tp.decode_small)}; L_m "
                  f"{prof.token_budget(int(degree))}; held-out median relative error "
                  f"[bold]{rec['held_out_median_relative_error']:.1%}[/] "
                  f"(prefill {rec['prefill_held_out_error']:.1%}, "
                  f"decode {rec['decode_held_out_error']:.1%})")
    if overhead is not None:
        pre, dec = overhead.prefill, overhead.decode
        out.print(f"runtime overhead per step ({overhead.placement}, "
                  f"{len(overhead.requests)} lone requests, {overhead.num_steps} steps of "
                  f"bursts): prefill [bold]{pre.describe()}[/], decode "
                  f"[bold]{dec.describe()}[/]")
        if overhead.num_pulls:
            out.print(f"KV pull on the decode worker ({overhead.num_pulls} pulls): "
                      f"[bold]{overhead.pull.describe_pull()}[/]")
    out.print(f"wrote {path}")
    out.print(f"use it: dsbox plan --model {prof.model} --profile {path.parent} ...")


def _coeff_text(coeffs) -> str:
    return "[" + ", ".join(f"{c:.4g}" for c in coeffs) + "]"


def register(app: typer.Typer) -> None:
    app.command("profile")(
        engine_options(exclude=("model", "dummy_weights", "placement", "executor",
                                "share_devices"))(profile))
