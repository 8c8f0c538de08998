"""MainScreen: the dashboard (latency plots, window report, instances, placement, devices,
load generator) beside the chat pane; side by side from 120 columns, stacked below that
(the dashboard then scrolls above a one-line status of the window and a chat of fixed
height). F6 (``toggle_chat``) hides the chat so the dashboard fills the screen, and back."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header

from dsbox.tui.feed import DashboardView
from dsbox.tui.widgets.chat_pane import ChatPane
from dsbox.tui.widgets.devices_panel import DevicesPanel
from dsbox.tui.widgets.instances_table import InstancesTable
from dsbox.tui.widgets.latency_plot import LatencyPlot
from dsbox.tui.widgets.load_panel import LoadPanel
from dsbox.tui.widgets.placement_panel import PlacementPanel
from dsbox.tui.widgets.window_summary import StatusLine, WindowSummary


class MainScreen(Screen):
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]

    def __init__(self, placement_panel: PlacementPanel, chat: ChatPane) -> None:
        super().__init__()
        self._placement_panel = placement_panel
        self._chat = chat

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="▣")
        with Horizontal(id="body"):
            with VerticalScroll(id="dashboard"):
                with Horizontal(id="plots"):
                    yield LatencyPlot("ttft", id="ttft-plot")
                    yield LatencyPlot("tpot", id="tpot-plot")
                yield WindowSummary(id="summary")
                yield InstancesTable(id="instances")
                yield self._placement_panel
                yield DevicesPanel(id="devices")
                yield LoadPanel(id="load")
            yield StatusLine(id="status-line")
            yield self._chat
        yield Footer()

    def on_mount(self) -> None:
        self._chat.query_one("#prompt").focus()
        self.app.start_polling()

    def toggle_chat(self) -> bool:
        """Hide the chat (the dashboard fills the screen) or bring it back with the prompt
        focused. Returns whether the chat is shown now."""
        self.toggle_class("-dashboard-only")
        shown = not self.has_class("-dashboard-only")
        if shown:
            self._chat.query_one("#prompt").focus()
        else:
            self.query_one("#dashboard").focus()
        return shown

    def show(self, view: DashboardView) -> None:
        """Update every dashboard widget from one view (the caller batches the redraw)."""
        self.query_one("#ttft-plot", LatencyPlot).replot(view)
        self.query_one("#tpot-plot", LatencyPlot).replot(view)
        self.query_one(WindowSummary).show(view)
        self.query_one(StatusLine).show(view)
        self.query_one(InstancesTable).show(view.stats)
        self.query_one(DevicesPanel).show(view.resources)
