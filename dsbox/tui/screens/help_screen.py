"""HelpScreen: what the panes show and every key, over the main screen (Escape, F1 or q
closes it)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# dsbox run

**Dashboard** (left, or top on a narrow terminal)

- *Placement*: the devices and the instances on them (role, TP × PP) and the rule that
  chose the placement.
- *TTFT* / *TPOT*: p50 (green) and p90 (red) over the last window of finished requests,
  against the SLO (orange line); cyan points are your chat replies.
- *Requests*: the metrics report over the window: finished requests (chat and load), request
  and token rates, SLO attainment (both SLOs per request), latency percentiles.
- *Instances*: queue depth, running batch, KV cache blocks and usage, KV transfer rate,
  steps, health.
- *Devices*: per-GPU utilisation and memory (NVML), or the CPU's load and per-core use.
- *Load generator*: replays a workload (ShareGPT, HumanEval, long documents) at a Poisson
  rate you set.

On a terminal under 120 columns the chat sits below the dashboard, with the window's key
figures (SLO attainment, TTFT and TPOT p90, request rate, queue, batch, KV usage) in one
line above it; scroll the dashboard or press F6 to see all of it.

**Chat** (right, or bottom): type and press Enter; the reply streams in and ends with its
TTFT and TPOT. Set temperature, top-p and max tokens above the input.

| key | does |
|---|---|
| Enter | send the message |
| Escape | cancel the reply (the request is aborted, its KV freed) |
| Tab / Shift+Tab | move between the input, the settings and the panes |
| F2 | load generator on / off |
| F3 / F4 | load rate down / up |
| F5 | next workload |
| F6 | hide the chat (the dashboard fills the screen) / bring it back |
| F1 or ? | this help |
| Ctrl+Q | quit (stops every worker) |
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q,question_mark", "dismiss", "Close help")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)

    def action_dismiss(self, result=None) -> None:
        self.dismiss(None)
