"""The ``dsbox run`` app and ``make_app(client, ...)``, the one factory the CLI and the tests use.

The app holds an engine client (it never reaches past it) and shows:

- the dashboard, refreshed by a poll that runs off the UI thread and re-arms itself with
  ``set_timer`` once its result is shown, so polls never overlap; each poll is one
  :class:`~dsbox.tui.feed.DashboardFeed` refresh (a stats snapshot plus the metrics report
  over the sliding window) and one device sample, drawn inside ``batch_update()``;
- the chat pane (:class:`~dsbox.tui.widgets.chat_pane.ChatPane`), focused at start;
- the load generator (:class:`~dsbox.workloads.load_generator.LoadGenerator`), steered by
  keys: F2 on/off, F3/F4 rate, F5 workload.

Quitting (Ctrl+Q) stops the load generator and, when the app owns the client (the CLI's
case), closes it, which stops every worker. :meth:`DsboxApp.exit_on_signal` is safe to call
from a signal handler: the CLI's handlers close the client and then ask the app to leave.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from textual import work
from textual.app import App
from textual.binding import Binding

from dsbox.chat_template import ChatTemplate
from dsbox.cli.placement_choice import PlacementChoice
from dsbox.config.slo import SLO
from dsbox.devices import Devices
from dsbox.tui.chat_session import ChatSession, ChatSettings
from dsbox.tui.feed import DEFAULT_HISTORY_LEN, DEFAULT_WINDOW_S, DashboardFeed, DashboardView
from dsbox.tui.resources import ResourceMonitor, ResourceSample
from dsbox.tui.screens.help_screen import HelpScreen
from dsbox.tui.screens.main_screen import MainScreen
from dsbox.tui.widgets.chat_pane import ChatPane
from dsbox.tui.widgets.load_panel import LoadPanel
from dsbox.tui.widgets.placement_panel import PlacementPanel
from dsbox.workloads import WORKLOAD_NAMES, RequestSpec, load_workload
from dsbox.workloads.load_generator import LoadGenerator

DEFAULT_SLO = "chatbot-13b"
#: the load rates F3/F4 step through, requests/s
RATE_STEPS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)


def default_slo() -> SLO:
    return SLO.preset(DEFAULT_SLO)


@dataclass(frozen=True, slots=True)
class AppOptions:
    """What the app shows and how often; the chat's and the load's starting settings."""

    slo: SLO = field(default_factory=default_slo)
    window_s: float = DEFAULT_WINDOW_S           # the report's sliding window, seconds
    history_len: int = DEFAULT_HISTORY_LEN       # points kept per latency plot
    poll_interval_s: float = 1.0                 # seconds between dashboard refreshes
    workload: str = "sharegpt"                   # the load generator's workload
    load_rate: float = 1.0                       # its rate, requests/s
    chat: ChatSettings = field(default_factory=ChatSettings)
    owns_client: bool = False                    # quitting closes the client

    def __post_init__(self) -> None:
        if not (math.isfinite(self.poll_interval_s) and self.poll_interval_s > 0):
            raise ValueError("poll_interval_s must be a positive number of seconds, got "
                             f"{self.poll_interval_s!r}")
        if self.workload not in WORKLOAD_NAMES:
            raise ValueError(f"unknown workload {self.workload!r}; known: "
                             f"{', '.join(WORKLOAD_NAMES)}")
        if not (math.isfinite(self.load_rate) and self.load_rate > 0):
            raise ValueError(f"load rate must be > 0 requests/s, got {self.load_rate!r}")


class DsboxApp(App):
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses live elsewhere
    TITLE = "dsbox"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("f1", "help", "Help"),
        Binding("question_mark", "help", "Help", show=False),
        Binding("f2", "toggle_load", "Load"),
        Binding("f3", "rate_down", "Rate−"),
        Binding("f4", "rate_up", "Rate+"),
        Binding("f5", "next_workload", "Workload"),
        Binding("f6", "toggle_chat", "Chat"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("escape", "cancel_reply", "Cancel", show=False),
    ]

    def __init__(self, client, options: AppOptions, choice: PlacementChoice, devices: Devices,
                 template: ChatTemplate, resources: Callable[[], ResourceSample] | None,
                 workloads: Callable[[str], Sequence[RequestSpec]]) -> None:
        super().__init__()
        self.client = client
        self.options = options
        self.choice = choice
        self.devices = devices
        self.workloads = workloads
        self.feed = DashboardFeed(client, options.slo, window_s=options.window_s,
                                  history_len=options.history_len, resources=resources,
                                  load=self._load_status)
        self.chat = ChatPane(client, ChatSession(client.tokenizer, client.max_model_len,
                                                 template), options.chat, id="chat")
        self.workload = options.workload
        self.load_rate = options.load_rate
        self.load: LoadGenerator | None = None
        self.load_note = ""
        self.num_polls = 0
        self.poll_error: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._main: MainScreen | None = None
        self._shutting_down = False
        self.title = f"dsbox · {client.spec.name}"
        slo = options.slo
        self.sub_title = (f"SLO {slo.name + ' ' if slo.name else ''}TTFT ≤ {slo.ttft * 1000:g} ms"
                          f", TPOT ≤ {slo.tpot * 1000:g} ms")

    # --- layout and the poll ------------------------------------------------------------
    def get_default_screen(self) -> MainScreen:
        stats = self.client.stats()
        panel = PlacementPanel(stats.instances, self.choice.placement, self.choice.rule,
                               self.devices.describe(), id="placement")
        self._main = MainScreen(panel, self.chat)
        return self._main

    def on_mount(self) -> None:
        self.loop = asyncio.get_running_loop()

    def start_polling(self) -> None:
        """Called once the main screen is up: the first poll, which re-arms itself."""
        self._show_load()
        self._poll()

    @work(exclusive=True, group="poll", exit_on_error=False)
    async def _poll(self) -> None:
        """One refresh off the UI thread (a stats call waits on the engine's loop), then
        draw it; the next poll is armed only after this one is drawn."""
        try:
            view, error = await asyncio.to_thread(self.feed.refresh), None
        except Exception as exc:  # a closed or failed engine: show it, keep polling
            view, error = None, f"{type(exc).__name__}: {exc}"
        self._show(view, error)

    def _show(self, view: DashboardView | None, error: str | None) -> None:
        self.poll_error = error
        if view is not None and self._main is not None:
            with self.batch_update():
                self._main.show(view)
                self._show_load(view)
        elif error is not None:
            self.sub_title = f"engine: {error}"
        self.num_polls += 1
        if not self._shutting_down:
            self.set_timer(self.options.poll_interval_s, self._poll)

    def _show_load(self, view: DashboardView | None = None) -> None:
        if self._main is None:
            return
        status = view.load if view is not None else self._load_status()
        self._main.query_one(LoadPanel).show(self.workload, self.load_rate, status,
                                             self.load_note)

    def _load_status(self):
        return self.load.status() if self.load is not None else None

    # --- the load generator -------------------------------------------------------------
    def action_toggle_load(self) -> None:
        if self.load is not None and self.load.running:
            self.load.stop()
            self.load_note = "stopped"
            self._show_load()
        else:
            self._start_load(self.workload)

    @work(exclusive=True, group="load", exit_on_error=False)
    async def _start_load(self, name: str) -> None:
        self._set_load_note(f"loading {name} ...")
        try:
            requests = await asyncio.to_thread(self.workloads, name)
        except (ValueError, OSError) as exc:  # a missing data package, a bad cache
            self._set_load_note("")
            self.notify(str(exc), title="load generator", severity="error")
            return
        if self.load is not None:
            self.load.stop()
        if self._shutting_down:
            return
        self.load = LoadGenerator(self.client, requests, rate=self.load_rate)
        self.load.start()
        self._set_load_note("")

    def _set_load_note(self, note: str) -> None:
        self.load_note = note
        self._show_load()

    def _set_rate(self, rate: float) -> None:
        self.load_rate = rate
        if self.load is not None:
            self.load.set_rate(rate)
        self._show_load()

    def action_rate_up(self) -> None:
        self._set_rate(next((r for r in RATE_STEPS if r > self.load_rate * 1.001),
                            self.load_rate))

    def action_rate_down(self) -> None:
        self._set_rate(next((r for r in reversed(RATE_STEPS) if r < self.load_rate * 0.999),
                            self.load_rate))

    def action_next_workload(self) -> None:
        names = list(WORKLOAD_NAMES)
        self.workload = names[(names.index(self.workload) + 1) % len(names)]
        if self.load is not None and self.load.running:
            self._start_load(self.workload)
        else:
            self.load = None
            self._show_load()

    def action_cancel_reply(self) -> None:
        """Escape outside the chat pane cancels the reply too."""
        self.chat.action_cancel_reply()

    # --- help and quitting --------------------------------------------------------------
    def action_toggle_chat(self) -> None:
        if self._main is not None and self.screen is self._main:
            self._main.toggle_chat()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        await self.shutdown()
        self.exit()

    async def shutdown(self) -> None:
        """Stop the load (ending its requests) and, if the app owns it, close the client."""
        self._shutting_down = True
        if self.load is not None:
            self.load.stop(abort=True)
        if self.options.owns_client:
            await asyncio.to_thread(self.client.close)

    def exit_on_signal(self, signum: int) -> None:
        """Leave the app with code 128 + signum; callable from a signal handler or any
        thread (the CLI's handler has closed the client already)."""
        if self.loop is None or self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self._exit_for_signal, signum)

    def _exit_for_signal(self, signum: int) -> None:
        self._shutting_down = True
        if self.load is not None:
            self.load.stop(abort=True)
        self.exit(return_code=128 + signum)


def _cached_loader() -> Callable[[str], Sequence[RequestSpec]]:
    cache: dict[str, Sequence[RequestSpec]] = {}

    def load(name: str) -> Sequence[RequestSpec]:
        if name not in cache:
            cache[name] = load_workload(name)
        return cache[name]

    return load


def make_app(client, *, choice: PlacementChoice | None = None, devices: Devices | None = None,
             template: ChatTemplate | None = None,
             resources: Callable[[], ResourceSample] | None = None,
             workloads: Callable[[str], Sequence[RequestSpec]] | None = None,
             **options) -> DsboxApp:
    """The app over ``client``. ``choice``: the placement and the rule that chose it
    (default: the client's placement, "given"); ``devices``: what the machine has (default:
    discovered); ``template``: the chat template (default: dsbox's plain one);
    ``resources``: a device sampler (default: NVML, else the CPU); ``workloads``: name ->
    requests for the load generator (default: ``load_workload``, cached). Other keywords
    are :class:`AppOptions` fields (``slo``, ``window_s``, ``poll_interval_s``, ``workload``,
    ``load_rate``, ``chat``, ``owns_client``)."""
    from dsbox.devices import discover_devices

    opts = AppOptions(**options)
    if devices is None:
        devices = discover_devices(client.info().device)
    if choice is None:
        choice = PlacementChoice(client.placement.format(False), "given to the app")
    if resources is None:
        resources = ResourceMonitor(use_gpus=devices.is_gpu).sample
    return DsboxApp(client, opts, choice, devices, template or ChatTemplate(), resources,
                    workloads or _cached_loader())
