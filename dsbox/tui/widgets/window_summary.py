"""WindowSummary: the metrics report over the sliding window in a few lines: finished
requests by tag, request and token rates, SLO attainment, TTFT and TPOT p50/p90, and the
engine's counters from the stats snapshot. StatusLine: the same window in one line, for a
terminal too small to show the dashboard beside the chat."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from dsbox.metrics.report import MetricsReport
from dsbox.tui.feed import DashboardView
from dsbox.tui.format import ms, pct, rate


def _latencies(report: MetricsReport) -> str:
    return (f"TTFT p50 {ms(report.ttft.median)} p90 {ms(report.ttft.p90)} · "
            f"TPOT p50 {ms(report.tpot.median)} p90 {ms(report.tpot.p90)}")


def summarize(view: DashboardView) -> Text:
    r = view.report
    chat, load = view.by_tag["chat"], view.by_tag["load"]
    text = Text()
    text.append(f"last {view.duration_s:.0f} s: ", style="bold")
    text.append(f"{r.num_requests} finished (chat {chat.num_requests}, load "
                f"{load.num_requests}) · {rate(r.request_throughput, 'req/s')} · "
                f"{rate(r.output_throughput, 'tok/s')}\n")
    text.append("SLO attainment ", style="bold")
    text.append(pct(r.slo_attainment) if r.num_requests > r.num_aborted else "-",
                style="bold green" if (r.slo_attainment or 0) >= view.slo.attainment
                else "bold red")
    text.append(f" (goal {pct(view.slo.attainment)}; TTFT ≤ {ms(view.slo.ttft)}, "
                f"TPOT ≤ {ms(view.slo.tpot)})\n")
    text.append("all   ", style="bold")
    text.append(_latencies(r) + "\n")
    text.append("chat  ", style="bold cyan")
    text.append(_latencies(chat) + "\n")
    s = view.stats
    text.append("engine ", style="bold")
    text.append(f"{s.num_requests} requests · {s.num_running} running · {s.num_waiting} "
                f"waiting · {s.generation_tokens} tokens generated · up {s.uptime_s:.0f} s")
    return text


def summarize_line(view: DashboardView) -> Text:
    """One line (fits 78 columns): attainment, TTFT and TPOT p90, request rate, waiting and
    running requests, KV usage."""
    r, s = view.report, view.stats
    text = Text()
    met = (r.slo_attainment or 0) >= view.slo.attainment
    text.append("SLO ", style="bold")
    text.append(pct(r.slo_attainment) if r.num_requests > r.num_aborted else "-",
                style="bold green" if met else "bold red")
    text.append(f"  p90 TTFT {ms(r.ttft.p90)} TPOT {ms(r.tpot.p90)}  "
                f"{rate(r.request_throughput, 'req/s')}  {s.num_waiting} wait "
                f"{s.num_running} run  KV {pct(s.kv_usage)}")
    if not s.healthy:
        text.append("  unhealthy", style="bold red")
    return text


class StatusLine(Static):
    """The window's key figures in one line (shown above the chat on narrow terminals)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("waiting for the first snapshot ...", **kwargs)

    def show(self, view: DashboardView) -> None:
        self.update(summarize_line(view))


class WindowSummary(Static):
    def __init__(self, **kwargs) -> None:
        super().__init__("waiting for the first snapshot ...", **kwargs)
        self.border_title = "Requests"

    def show(self, view: DashboardView) -> None:
        self.update(summarize(view))
