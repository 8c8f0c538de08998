"""``dsbox run [MODEL]``: load a model and print a short generation (the main job for now).

Until the dashboard exists this is what ``make run`` shows: the model loads (default: the
bundled dsbox-chat checkpoint, no download), a couple of chat prompts (rendered with the
dsbox chat template) are generated in one batch through
the in-process colocated engine (or, with ``--placement``, the instances of that placement),
and each completion is printed with its TTFT and TPOT. Engine options come from
``EngineConfig`` (``dsbox.cli.options``). Bad input gives one error line and exit code 2.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dsbox.chat_template import ChatTemplate
from dsbox.cli.options import engine_options
from dsbox.config import DEFAULT_MODEL

DEFAULT_PROMPTS = tuple(ChatTemplate().render([{"role": "user", "content": question}])
                        for question in ("What is the capital of France?",
                                         "Can you give me three tips for a good night's sleep?"))
EXIT_USAGE = 2

err_console = Console(stderr=True, highlight=False)


def fail(message: str) -> typer.Exit:
    """Print one error line to stderr; the caller raises the returned Exit (code 2)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


def _load(model: str, engine_kwargs: dict):
    """Build the LLM, turning every foreseeable bad input into one error line. The config
    and the model name are checked before torch is imported, so mistakes fail fast."""
    from dsbox.config import EngineConfig
    from dsbox.engine.model_source import ModelNotFoundError, resolve_model

    try:
        config = EngineConfig(model=model, **engine_kwargs)
        resolve_model(config.model, config.dummy_weights)
        if config.placement is not None:
            from dsbox.config.placement import Placement

            Placement.parse(config.placement)
    except (ModelNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None

    from dsbox.engine.weights import WeightsError
    from dsbox.llm import LLM

    try:
        return LLM(model=model, **engine_kwargs)
    except (ValueError, WeightsError, FileNotFoundError, KeyError) as exc:
        raise fail(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from None


def _describe(llm) -> str:
    """One line on what was loaded: the in-process engine or the controller's instances."""
    core = llm.engine if llm.engine is not None else llm.controller
    text = (f"[bold]{escape(core.spec.name)}[/] ({escape(core.source.where)}); "
            f"{core.spec.num_params / 1e6:.1f} M parameters, {core.dtype} on {core.device}")
    if llm.engine is not None:
        text += (f", {llm.engine.block_manager.num_blocks} KV blocks of "
                 f"{llm.config.block_size} tokens")
    else:
        text += f", placement {llm.config.placement}"
    return text


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def run(
    model: Annotated[str, typer.Argument(help="registry name (see `dsbox models`) or a "
                                              "checkpoint directory")] = DEFAULT_MODEL,
    prompt: Annotated[list[str] | None, typer.Option(
        "--prompt", "-p", help="prompt to complete (repeat for several)")] = None,
    max_tokens: Annotated[int, typer.Option(help="tokens to generate per prompt")] = 24,
    temperature: Annotated[float, typer.Option(help="0 = greedy")] = 0.0,
    *,
    engine_kwargs: dict,
) -> None:
    """Load MODEL and print a short generation for a couple of prompts, with TTFT/TPOT."""
    from dsbox.engine.sampling_params import SamplingParams

    prompts = list(prompt) if prompt else list(DEFAULT_PROMPTS)
    try:
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=0)
    except ValueError as exc:
        raise fail(str(exc)) from None
    out = Console(highlight=False)
    t0 = time.perf_counter()
    with out.status(f"loading {model} ..."):
        llm = _load(model, engine_kwargs)
    load_s = time.perf_counter() - t0
    with llm:
        out.print(f"{_describe(llm)}; loaded in {load_s:.2f} s")
        t0 = time.perf_counter()
        try:
            outs = llm.generate(prompts, params)
        except ValueError as exc:
            raise fail(str(exc)) from None
        wall = time.perf_counter() - t0
    for o in outs:
        out.print()
        out.print(f"[bold cyan]prompt:[/] {escape(o.prompt or '')}")
        out.print(f"[bold green]output:[/] {escape(repr(o.text))}")
    table = Table(title="latency per request", title_justify="left")
    for col in ("#", "prompt tokens", "output tokens", "finish", "TTFT", "TPOT"):
        table.add_column(col, justify="right" if col != "finish" else "left")
    for i, o in enumerate(outs):
        lc = o.lifecycle
        table.add_row(str(i), str(len(o.prompt_token_ids)), str(len(o.token_ids)),
                      o.finish_reason or "-", _ms(lc.ttft), _ms(lc.tpot))
    out.print()
    out.print(table)
    n = sum(len(o.token_ids) for o in outs)
    out.print(f"{n} tokens in {wall:.2f} s ({n / wall:.1f} tokens/s)")


def register(app: typer.Typer) -> None:
    app.command("run")(engine_options()(run))
