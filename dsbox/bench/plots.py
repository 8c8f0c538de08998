"""The bench's figures as PNG files (``--plots DIR``), like the DistServe paper's.

- ``attainment_vs_rate.png``: SLO attainment against the per-GPU request rate (Figure 8
  left), one line per target and placement (measured solid, simulated dashed);
- ``attainment_vs_slo_scale.png``: attainment against the SLO scale at one rate (Figure 8
  right): the same runs judged with both targets times the scale;
- ``latency_breakdown.png``: the five stages' mean latency per run, stacked (Figure 10);
- ``ttft_cdf.png`` and ``tpot_cdf.png``: the CDF of TTFT and TPOT at one rate.

Values come from the runs' reports and, for CDFs, the per-request values the report's
distributions are taken over (:func:`dsbox.metrics.report.metric_values`). matplotlib is
imported here only, with the Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path

from dsbox.bench.results import BenchResult, BenchRun
from dsbox.metrics.report import StageMeans, metric_values

FILES = ("attainment_vs_rate.png", "attainment_vs_slo_scale.png", "latency_breakdown.png",
         "ttft_cdf.png", "tpot_cdf.png")
_STYLE = {"real": "-", "simulated": "--", "endpoint": "-."}
_MARKER = {"real": "o", "simulated": "s", "endpoint": "^"}
DPI = 110


def focus_rate(result: BenchResult) -> float | None:
    """The rate the single-rate figures show: the median of the rates run."""
    rates = sorted(dict.fromkeys(r.rate for r in result.runs if r.rate is not None))
    return rates[(len(rates) - 1) // 2] if rates else None


def _focus_runs(result: BenchResult) -> list[BenchRun]:
    rate = focus_rate(result)
    return [r for r in result.runs if r.rate == rate]


def _colors(result: BenchResult) -> dict[str, str]:
    placements = list(dict.fromkeys(r.placement for r in result.runs))
    return {p: f"C{i % 10}" for i, p in enumerate(placements)}


def _rate_text(rate: float | None) -> str:
    return "the recorded trace" if rate is None else f"{rate:.4g} req/s"


def write_plots(result: BenchResult, out_dir: Path) -> list[Path]:
    """Write every figure into ``out_dir`` (created); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colors = _colors(result)
    written = []
    for name, draw in zip(FILES, (_attainment_vs_rate, _attainment_vs_scale, _breakdown,
                                  lambda r, ax, c: _cdf(r, ax, c, "ttft"),
                                  lambda r, ax, c: _cdf(r, ax, c, "tpot")), strict=True):
        fig, ax = plt.subplots(figsize=(7.5, 4.8) if name != FILES[2] else (9, 5))
        draw(result, ax, colors)
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
        written.append(path)
    return written


def _label(target: str, placement: str) -> str:
    return f"{target}: {placement or 'endpoint'}"


def _attainment_vs_rate(result: BenchResult, ax, colors) -> None:
    for target, placement in result.series():
        runs = [r for r in result.runs_of(target, placement) if r.rate is not None]
        runs.sort(key=lambda r: r.rate)
        if runs:
            ax.plot([r.rate_per_gpu for r in runs],
                    [r.report.slo_attainment * 100 for r in runs],
                    _STYLE.get(target, "-"), marker=_MARKER.get(target, "o"),
                    color=colors[placement], label=_label(target, placement))
    ax.axhline(result.slo.attainment * 100, color="gray", linestyle=":", linewidth=1,
               label=f"target {result.slo.attainment:.0%}")
    ax.set_xlabel("rate per GPU (requests/s)")
    ax.set_ylabel("SLO attainment (%)")
    ax.set_ylim(-3, 103)
    ax.set_title(f"{result.model}, {result.workload}: attainment against per-GPU rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _attainment_vs_scale(result: BenchResult, ax, colors) -> None:
    for run in _focus_runs(result):
        ax.plot(result.slo_scales, [run.attainment_at_scale(s) * 100 for s in result.slo_scales],
                _STYLE.get(run.target, "-"), marker=_MARKER.get(run.target, "o"),
                color=colors[run.placement], label=_label(run.target, run.placement))
    ax.axhline(result.slo.attainment * 100, color="gray", linestyle=":", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_xticks(result.slo_scales, [f"{x:g}" for x in result.slo_scales])
    ax.minorticks_off()
    ax.set_xlabel(f"SLO scale (x TTFT {result.slo.ttft * 1e3:.4g} ms, "
                  f"TPOT {result.slo.tpot * 1e3:.4g} ms)")
    ax.set_ylabel("SLO attainment (%)")
    ax.set_ylim(-3, 103)
    ax.set_title(f"attainment against SLO scale at {_rate_text(focus_rate(result))}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _breakdown(result: BenchResult, ax, colors) -> None:
    runs = [r for r in result.runs if r.report.breakdown is not None]
    labels = [f"{r.target}: {r.placement}\n{_rate_text(r.rate)}" for r in runs]
    left = [0.0] * len(runs)
    for k, stage in enumerate(StageMeans.STAGES):
        values = [getattr(r.report.breakdown, stage) * 1e3 for r in runs]
        ax.barh(range(len(runs)), values, left=left, color=f"C{k}",
                label=stage.replace("_", " "))
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_yticks(range(len(runs)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("mean latency per request (ms)")
    ax.set_title("latency breakdown" if runs else "latency breakdown (no run has the stamps)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)


def _cdf(result: BenchResult, ax, colors, metric: str) -> None:
    slo = result.slo.ttft if metric == "ttft" else result.slo.tpot
    for run in _focus_runs(result):
        values = sorted(v * 1e3 for v in metric_values(run.records, metric))
        if values:
            n = len(values)
            ax.step(values, [(i + 1) / n * 100 for i in range(n)], where="post",
                    linestyle=_STYLE.get(run.target, "-"), color=colors[run.placement],
                    label=_label(run.target, run.placement))
    ax.axvline(slo * 1e3, color="gray", linestyle=":", linewidth=1, label="SLO")
    ax.set_xlabel(f"{metric.upper()} (ms)")
    ax.set_ylabel("requests (%)")
    ax.set_title(f"{metric.upper()} CDF at {_rate_text(focus_rate(result))}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
