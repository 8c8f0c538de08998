"""``dsbox run [MODEL]``: bring a model up on this machine and open the app (``make run``).

Start-up: find the devices (GPUs through NVML, else the CPU cores), choose the placement
(``--placement auto``, the default, or the given text; see
:mod:`dsbox.cli.placement_choice`), start the workers showing each stage and each worker's
weights as progress, then open the Textual app (:func:`dsbox.tui.app.make_app`): the live
dashboard beside a chat pane, and a load generator. The dashboard judges latency against
``--slo`` (default: the model's registry SLO when it has one, else ``chatbot-13b``).

With ``--no-tui``, or when stdout or stdin is not a terminal, the plain mode for scripts
streams the replies to each ``--prompt`` (sent as one chat turn through the chat template,
as the chat pane sends it) and prints each request's TTFT and TPOT in ms.

Whatever ends it (quitting, a crash, SIGINT, SIGTERM, SIGHUP), every worker is stopped
before the process exits (:mod:`dsbox.cli.shutdown`). Engine options come from
``EngineConfig`` (``dsbox.cli.options``). Bad input gives one error line and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from dsbox.chat_template import ChatTemplate
from dsbox.cli.errors import user_errors
from dsbox.cli.options import engine_options
from dsbox.config import DEFAULT_MODEL

DEFAULT_PROMPTS = ("What is the capital of France?",
                   "Can you give me three tips for a good night's sleep?")
FALLBACK_SLO = "chatbot-13b"
PLAIN_MAX_TOKENS, PLAIN_TEMPERATURE = 24, 0.0


def model_slo(spec, text: str | None):
    """``--slo`` when given; else the registry's SLO for the model; else chatbot-13b."""
    from dsbox.config.slo import SLO

    if text:
        return SLO.parse(text)
    return SLO.preset(spec.default_slo or FALLBACK_SLO)


def _describe(client, rule: str) -> str:
    """What was loaded, where it runs, and why this placement."""
    stats, info = client.stats(), client.info()
    return (f"[bold]{escape(info.model)}[/] ({escape(info.source)}); "
            f"{client.spec.num_params / 1e6:.1f} M parameters, {info.dtype} on "
            f"{info.device}, placement {client.placement.format(False)}, "
            f"{stats.kv_blocks_total} KV blocks of {client.config.block_size} tokens\n"
            f"placement chosen by: {escape(rule)}")


def run(
    model: Annotated[str, typer.Argument(help="registry name (see `dsbox models`) or a "
                                              "checkpoint directory")] = DEFAULT_MODEL,
    prompt: Annotated[list[str] | None, typer.Option(
        "--prompt", "-p", help="plain mode: prompt to complete (repeat for several)")] = None,
    max_tokens: Annotated[int | None, typer.Option(
        help=f"tokens per reply (plain mode: {PLAIN_MAX_TOKENS}; chat: 128)")] = None,
    temperature: Annotated[float | None, typer.Option(
        help=f"0 = greedy (plain mode: {PLAIN_TEMPERATURE:g}; chat: 0.7)")] = None,
    no_tui: Annotated[bool, typer.Option(
        "--no-tui", help="plain mode: stream the replies to --prompt and print TTFT/TPOT "
                         "(also when stdout is not a terminal)")] = False,
    slo: Annotated[str | None, typer.Option(
        help="SLO of the dashboard: a preset (chatbot-13b, ...) or 'TTFT,TPOT' in seconds "
             "[default: the model's, else chatbot-13b]")] = None,
    chat_template: Annotated[Path | None, typer.Option(
        help="chat template file (TOML; see README) [default: dsbox's plain template]")] = None,
    workload: Annotated[str, typer.Option(
        help="load generator's workload: sharegpt, humaneval or longdoc")] = "sharegpt",
    rate: Annotated[float, typer.Option(
        help="load generator's starting rate, requests/s (F2 starts it)")] = 1.0,
    *,
    engine_kwargs: dict,
) -> None:
    """Bring MODEL up with a placement chosen for this machine and open the live dashboard
    with a chat pane (plain streaming output with --no-tui or without a terminal)."""
    from dsbox.cli.placement_choice import choose_placement
    from dsbox.cli.shutdown import Interrupted, ShutdownGuard
    from dsbox.cli.startup import start_engine
    from dsbox.config import EngineConfig
    from dsbox.devices import discover_devices
    from dsbox.engine.core.sampling_params import SamplingParams
    from dsbox.engine.model.source import resolve_model
    from dsbox.tui.chat_session import ChatSettings

    tui = not no_tui and sys.stdout.isatty() and sys.stdin.isatty()
    with user_errors():
        source = resolve_model(model, bool(engine_kwargs.get("dummy_weights")))
        devices = discover_devices(engine_kwargs.get("device") or "auto")
        slo_value = model_slo(source.spec, slo)
        choice = choose_placement(engine_kwargs.get("placement") or "auto", source.spec,
                                  devices, slo=slo_value)
        config = EngineConfig(model=model, **{**engine_kwargs, "placement": choice.placement})
        template = ChatTemplate.from_file(chat_template) if chat_template else ChatTemplate()
        chat = ChatSettings(**{k: v for k, v in (("max_tokens", max_tokens),
                                                  ("temperature", temperature))
                               if v is not None})
        app_options = dict(slo=slo_value, workload=workload, load_rate=rate, chat=chat)
        from dsbox.tui.app import AppOptions

        AppOptions(**app_options)  # a bad --workload or --rate: one error line, before start-up
        params = SamplingParams(
            max_tokens=PLAIN_MAX_TOKENS if max_tokens is None else max_tokens,
            temperature=PLAIN_TEMPERATURE if temperature is None else temperature, seed=0)
    out = Console(highlight=False)
    code = 0
    try:
        with ShutdownGuard() as guard:
            with user_errors():
                guard.client = start_engine(config, Console(stderr=True, highlight=False))
            if tui:
                code = _run_app(guard, choice, devices, template, app_options)
            else:
                out.print(_describe(guard.client, choice.rule))
                with user_errors():
                    from dsbox.cli.run_plain import run_plain

                    run_plain(guard.client, list(prompt or DEFAULT_PROMPTS), params, out,
                              template)
    except Interrupted as exc:
        code = exc.exit_code
    if code:
        raise typer.Exit(code)


def _run_app(guard, choice, devices, template, app_options: dict) -> int:
    """Run the app until it ends; its exit code (128 + signal number after a signal)."""
    from dsbox.tui.app import make_app

    app = make_app(guard.client, choice=choice, devices=devices, template=template,
                   owns_client=True, **app_options)
    guard.on_signal = app.exit_on_signal
    try:
        app.run()
    finally:
        guard.on_signal = None
    if guard.signum is not None:
        return 128 + guard.signum
    return app.return_code or 0


def register(app: typer.Typer) -> None:
    app.command("run")(engine_options()(run))
