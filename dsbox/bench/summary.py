"""What a bench prints: the ``vllm bench serve`` result block per run, then the tables
(SLO attainment at each rate, real against simulated, per-GPU goodput, the five-stage
latency breakdown). Every number is read from a run's metrics report or a goodput result;
nothing here computes a statistic of its own.
"""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from dsbox.bench.goodput import GoodputResult
from dsbox.bench.results import BenchResult, BenchRun
from dsbox.metrics.report import Distribution, MetricsReport, StageMeans

WIDTH = 50
_LATENCIES = (("ttft", "TTFT", "Time to First Token"),
              ("tpot", "TPOT", "Time per Output Token (excl. 1st token)"),
              ("itl", "ITL", "Inter-token Latency"),
              ("e2e", "E2EL", "End-to-end Latency"))


def _row(name: str, value, fmt: str = "") -> str:
    if isinstance(value, float) and math.isnan(value):
        return f"{name:<40} {'n/a':<10}"
    return f"{name:<40} {value:<10{fmt}}"


def serving_block(report: MetricsReport, title: str = " Serving Benchmark Result ") -> str:
    """The 50-wide block of ``vllm bench serve`` (and its P90 lines) for one run."""
    lines = [f"{title:=^{WIDTH}}",
             _row("Successful requests:", report.num_completed),
             _row("Failed requests:", report.num_failed)]
    if report.num_aborted:
        lines.append(_row("Aborted requests:", report.num_aborted))
    lines += [_row("Benchmark duration (s):", report.duration_s, ".2f"),
              _row("Total input tokens:", report.prompt_tokens),
              _row("Total generated tokens:", report.output_tokens),
              _row("Request throughput (req/s):", report.request_throughput, ".2f")]
    if report.goodput is not None:
        lines.append(_row("Request goodput (req/s):", report.goodput, ".2f"))
    lines += [_row("Output token throughput (tok/s):", report.output_throughput, ".2f"),
              _row("Total Token throughput (tok/s):", report.total_token_throughput, ".2f")]
    if report.slo_attainment is not None:
        lines.append(_row("SLO attainment (%):", report.slo_attainment * 100, ".1f"))
    for attr, short, heading in _LATENCIES:
        dist: Distribution = getattr(report, attr)
        ms = dist.ms()
        lines.append(f"{heading:-^{WIDTH}}")
        lines += [_row(f"Mean {short} (ms):", ms["mean"], ".2f"),
                  _row(f"Median {short} (ms):", ms["median"], ".2f"),
                  _row(f"P90 {short} (ms):", ms["p90"], ".2f"),
                  _row(f"P99 {short} (ms):", ms["p99"], ".2f")]
    lines.append("=" * WIDTH)
    return "\n".join(lines)


def print_run(console: Console, run: BenchRun) -> None:
    console.print(f"[bold]{run.label}[/] ({run.num_gpus} device"
                  f"{'s' if run.num_gpus > 1 else ''})")
    console.print(serving_block(run.report), markup=False, highlight=False)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _series_name(target: str, placement: str) -> str:
    return f"{target}\n{placement or 'endpoint'}"


def attainment_table(result: BenchResult) -> Table:
    slo = result.slo
    table = Table(title=f"SLO attainment (both TTFT <= {slo.ttft * 1e3:.4g} ms and TPOT <= "
                        f"{slo.tpot * 1e3:.4g} ms; target {slo.attainment:.0%})",
                  title_justify="left")
    table.add_column("rate (req/s)", justify="right")
    series = result.series()
    for target, placement in series:
        gpus = result.runs_of(target, placement)[0].num_gpus
        table.add_column(f"{_series_name(target, placement)}\n({gpus} dev.)", justify="right")
    rates = list(dict.fromkeys(r.rate for r in result.runs))
    for rate in rates:
        row = ["as recorded" if rate is None else f"{rate:.4g}"]
        for target, placement in series:
            match = [r for r in result.runs_of(target, placement) if r.rate == rate]
            row.append(_pct(match[0].report.slo_attainment) if match else "-")
        table.add_row(*row)
    return table


def real_vs_sim_table(result: BenchResult) -> Table | None:
    rows = result.real_vs_simulated()
    if not rows:
        return None
    table = Table(title="Measured against simulated SLO attainment", title_justify="left")
    table.add_column("placement", overflow="fold", min_width=16)
    for col in ("rate\n(req/s)", "measured", "simulated", "sim - meas.\n(points)",
                "steps /\nprofile"):
        table.add_column(col, justify="right")
    for row in rows:
        rate = "as recorded" if row["rate"] is None else f"{row['rate']:.4g}"
        speed = row["step_time_vs_profile"]
        table.add_row(row["placement"], rate, _pct(row["measured"]), _pct(row["simulated"]),
                      f"{row['difference_pp']:+.1f}", "-" if speed is None else f"{speed:.2f}x")
    table.caption = ("steps / profile: median of each engine step's measured time over the "
                     "profile's (1.20x: the engine ran 20% slower than simulated)")
    table.caption_justify = "left"
    return table


def goodput_table(result: BenchResult) -> Table | None:
    if not result.goodputs:
        return None
    table = Table(title=f"Per-GPU goodput (highest rate with >= {result.slo.attainment:.0%} "
                        "SLO attainment; sweep + binary search)", title_justify="left")
    table.add_column("target")
    table.add_column("placement", overflow="fold", min_width=16)
    for col in ("GPUs", "goodput\n(req/s)", "per GPU\n(req/s)", "fails at\n(req/s)",
                "probes"):
        table.add_column(col, justify="right")
    for g in result.goodputs:
        at_least = ">= " if _unbracketed(g) else ""
        table.add_row(g.target, g.placement or "endpoint", str(g.num_gpus),
                      f"{at_least}{g.goodput:.3g}", f"{at_least}{g.goodput_per_gpu:.3g}",
                      "-" if g.upper is None else f"{g.upper:.3g}", str(len(g.probes)))
    if any(_unbracketed(g) for g in result.goodputs):
        table.caption = ("'>=': every rate tried met the target, so the goodput is higher "
                         "still; --goodput-probes N runs more rates to find where it fails")
        table.caption_justify = "left"
    return table


def _unbracketed(g: GoodputResult) -> bool:
    """No rate tried failed the attainment target: the goodput is only a lower bound."""
    return g.upper is None and g.goodput > 0


def verdicts(result: BenchResult) -> list[str]:
    """Per target kind with several placements: which has the best per-GPU goodput, and by
    how much over the next best."""
    lines = []
    for kind in dict.fromkeys(g.target for g in result.goodputs):
        ranked = sorted((g for g in result.goodputs if g.target == kind),
                        key=lambda g: g.goodput_per_gpu, reverse=True)
        if len(ranked) < 2:
            continue
        best, second = ranked[0], ranked[1]
        if second.goodput_per_gpu > 0:
            ratio = f"{best.goodput_per_gpu / second.goodput_per_gpu:.2f}x {second.placement}"
        else:
            ratio = f"{second.placement} meets the SLO at no rate tried"
        at = ">= " if _unbracketed(best) else ""
        lines.append(f"best ({kind}): {best.placement} at {at}{best.goodput_per_gpu:.3g} "
                     f"req/s per GPU ({ratio})")
    return lines


STAGE_HEADERS = {"prefill_queueing": "prefill\nqueue", "prefill_execution": "prefill\nexec",
                 "transfer": "KV\ntransfer", "decode_queueing": "decode\nqueue",
                 "decode_execution": "decode\nexec"}


def breakdown_tables(result: BenchResult) -> list[Table]:
    """The five-stage latency breakdown, one table per target and placement (a row per
    rate), narrow enough for an 80-column terminal."""
    tables: dict[tuple[str, str], Table] = {}
    for run in result.runs:
        b = run.report.breakdown
        if b is None:
            continue
        key = (run.target, run.placement)
        if key not in tables:
            table = Table(title=f"Latency breakdown, {_series_name(*key)} (mean ms per "
                                "request)", title_justify="left")
            table.add_column("rate\n(req/s)", justify="right")
            for stage in StageMeans.STAGES:
                table.add_column(STAGE_HEADERS[stage], justify="right")
            table.add_column("total", justify="right")
            tables[key] = table
        values = [getattr(b, s) * 1e3 for s in StageMeans.STAGES]
        rate = "trace" if run.rate is None else f"{run.rate:.4g}"
        tables[key].add_row(rate, *(f"{v:.1f}" for v in values), f"{sum(values):.1f}")
    return list(tables.values())


def print_summary(console: Console, result: BenchResult) -> None:
    """The tables after the runs."""
    for table in (attainment_table(result), real_vs_sim_table(result), goodput_table(result),
                  *breakdown_tables(result)):
        if table is not None:
            console.print()
            console.print(table)
    for line in verdicts(result):
        console.print(line)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
