"""LatencyPlot: TTFT or TPOT (p50 and p90 over the sliding window) against time, with the SLO
as a horizontal line and finished chat requests as points. Redrawn from the feed's
fixed-size history, so drawing costs the same at any uptime."""

from __future__ import annotations

import math

from textual_plotext import PlotextPlot

from dsbox.tui.feed import DashboardView


class LatencyPlot(PlotextPlot):
    def __init__(self, metric: str, **kwargs) -> None:
        if metric not in ("ttft", "tpot"):
            raise ValueError(f"metric must be ttft or tpot, got {metric!r}")
        super().__init__(**kwargs)
        self.metric = metric
        self.border_title = (f"{metric.upper()} ms  [green]p50[/] [red]p90[/] "
                             "[#ff8700]SLO[/] [cyan]● chat[/]")
        self.border_subtitle = "x: engine uptime, s"

    def replot(self, view: DashboardView) -> None:
        plt = self.plt
        plt.clear_data()
        slo_ms = getattr(view.slo, self.metric) * 1000
        p50 = [(p.t, getattr(p, f"{self.metric}_p50") * 1000) for p in view.history]
        p90 = [(p.t, getattr(p, f"{self.metric}_p90") * 1000) for p in view.history]
        p50 = [(t, v) for t, v in p50 if not math.isnan(v)]
        p90 = [(t, v) for t, v in p90 if not math.isnan(v)]
        top = slo_ms
        for points, color in ((p90, "red"), (p50, "green")):
            if points:
                plt.plot([t for t, _ in points], [v for _, v in points], color=color,
                         marker="braille")
                top = max(top, max(v for _, v in points))
        chat = [(m.t, getattr(m, self.metric) * 1000) for m in view.chat_marks
                if getattr(m, self.metric) is not None]
        if chat:
            plt.scatter([t for t, _ in chat], [v for _, v in chat], color="cyan", marker="●")
            top = max(top, max(v for _, v in chat))
        plt.hline(slo_ms, color="orange")
        t_end = view.stats.uptime_s
        t_start = view.history[0].t if view.history else 0.0
        plt.xlim(min(t_start, t_end - 1), t_end)
        plt.ylim(0, top * 1.15)
        self.refresh()
