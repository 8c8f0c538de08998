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
from dsbox.cli.errors import user_errors
from dsbox.cli.options import engine_options
from dsbox.config import DEFAULT_MODEL

DEFAULT_PROMPTS = tuple(ChatTemplate().render([{"role": "user", "content": question}])
                        for question in ("What is the capital of France?",
                                         "Can you give me three tips for a good night's sleep?"))


def _load(model: str, engine_kwargs: dict):
    """Build the LLM; every foreseeable bad input becomes one error line (exit code 2)."""
    from dsbox.llm import LLM

    with user_errors():
        return LLM(model=model, **engine_kwargs)


def _describe(llm) -> str:
    """One line on what was loaded and where it runs."""
    client = llm.client
    stats = client.stats()
    text = (f"[bold]{escape(client.spec.name)}[/] ({escape(client.source.where)}); "
            f"{client.spec.num_params / 1e6:.1f} M parameters, {client.dtype} on "
            f"{client.device}, placement {client.placement.format(False)}, "
            f"{stats.kv_blocks_total} KV blocks of {llm.config.block_size} tokens")
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
    from dsbox.engine.core.sampling_params import SamplingParams

    prompts = list(prompt) if prompt else list(DEFAULT_PROMPTS)
    with user_errors():
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=0)
    out = Console(highlight=False)
    t0 = time.perf_counter()
    with out.status(f"loading {model} ..."):
        llm = _load(model, engine_kwargs)
    load_s = time.perf_counter() - t0
    with llm:
        out.print(f"{_describe(llm)}; loaded in {load_s:.2f} s")
        t0 = time.perf_counter()
        with user_errors():
            outs = llm.generate(prompts, params)
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
