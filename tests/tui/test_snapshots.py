"""Snapshots (pytest-textual-snapshot) of the dashboard at 80 x 24 (with the chat, and
filling the screen after F6) and on a large terminal,
the chat pane after an exchange, the help screen, and a GPU machine's devices panel.

The app is fed fixed data through the engine's own types (``EngineStats`` snapshots,
``RequestRecord`` lifecycles, ``RequestOutput`` chunks) by ``FixedClient``: rendering only;
every behavioural test drives a real engine (test_app_pilot.py). The feed is refreshed a
fixed number of times before the app starts and the app polls once (the next poll is an hour
away), so each screenshot is the same on every run. Update with ``--snapshot-update``.
"""

from __future__ import annotations

import pytest

from dsbox.cli.placement_choice import PlacementChoice
from dsbox.config.slo import SLO
from dsbox.devices import Devices
from dsbox.tui.app import make_app
from tests.tui.fixed_client import FixedClient, cpu_sample, gpu_sample

RULE = ("default rule (no latency profile for opt-tiny on this CPU): one prefill and one "
        "decode worker, as there are 2 cores")


def fixed_app(placement: str = "prefill:tp=1;decode:tp=1", gpus: bool = False):
    client = FixedClient(placement, device="cuda" if gpus else "cpu")
    devices = Devices("cuda", 4, "NVIDIA H100 80GB HBM3", 80 << 30) if gpus \
        else Devices("cpu", 2, "cpu", 24 << 30)
    rule = "given with --placement" if gpus else RULE
    app = make_app(client, choice=PlacementChoice(placement, rule), devices=devices,
                   resources=gpu_sample if gpus else cpu_sample, poll_interval_s=3600.0,
                   slo=SLO.preset("chatbot-13b"))
    for _ in range(40):
        app.feed.refresh()
    return app


async def _first_poll(pilot) -> None:
    from textual.widgets import Input

    while pilot.app.num_polls < 1:
        await pilot.pause(0.05)
    # a blinking cursor differs from shot to shot: stop it, and once a blink already due
    # has run, switch it on-off again (which shows the cursor steadily)
    fields = list(pilot.app.query(Input))
    for field in fields:
        field.cursor_blink = False
    await pilot.pause()
    for field in fields:
        field.cursor_blink = True
        field.cursor_blink = False
    await pilot.pause()


def test_dashboard_80x24(snap_compare):
    assert snap_compare(fixed_app(), terminal_size=(80, 24), run_before=_first_poll)


def test_dashboard_80x24_without_the_chat(snap_compare):
    async def f6(pilot) -> None:
        await _first_poll(pilot)
        await pilot.press("f6")
        await pilot.pause()

    assert snap_compare(fixed_app(), terminal_size=(80, 24), run_before=f6)


def test_dashboard_large_terminal(snap_compare):
    assert snap_compare(fixed_app(), terminal_size=(160, 48), run_before=_first_poll)


def test_dashboard_gpus(snap_compare):
    app = fixed_app("prefill:tp=2@0,1;decode:tp=2@2,3", gpus=True)
    assert snap_compare(app, terminal_size=(160, 48), run_before=_first_poll)


@pytest.mark.parametrize("size", [(80, 24), (130, 36)], ids=["80x24", "130x36"])
def test_chat_pane_after_an_exchange(snap_compare, size):
    async def chat(pilot):
        await _first_poll(pilot)
        from textual.widgets import Input

        prompt = pilot.app.query_one("#prompt", Input)  # typing it key by key is slow
        prompt.value = "What is the capital of France?"
        prompt.cursor_position = len(prompt.value)
        await pilot.press("enter")
        while pilot.app.chat.last_output is None:
            await pilot.pause(0.05)
        await pilot.pause()

    assert snap_compare(fixed_app(), terminal_size=size, run_before=chat)


def test_help_screen(snap_compare):
    assert snap_compare(fixed_app(), terminal_size=(80, 24), press=["f1"],
                        run_before=_first_poll)


def test_the_app_reads_the_device_from_the_client_info():
    """Without ``devices`` the app asks the client (``EngineClient.info``) which device the
    engine runs on: a CPU engine's app shows the CPU cores, whatever GPUs there are."""
    from dsbox.devices import discover_devices

    app = make_app(FixedClient(device="cpu"), resources=cpu_sample, poll_interval_s=3600.0)
    assert app.devices == discover_devices("cpu")  # not the GPUs "auto" would find
