"""The plain mode of ``dsbox run`` (``--no-tui``, or stdout not a terminal), for scripts:
each ``--prompt`` is sent as one chat turn (the chat template) and its reply streamed to
stdout as it arrives, then a table gives every
request's TTFT and TPOT in milliseconds."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import replace

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dsbox.chat_template import ChatTemplate
from dsbox.engine.core.request_output import RequestOutput
from dsbox.engine.core.sampling_params import SamplingParams
from dsbox.tui.format import ms


async def _stream(client, prompts: list[str], params: SamplingParams, out: Console,
                  template: ChatTemplate) -> list[RequestOutput]:
    finals = []
    params = replace(params, stop=[*params.stop, *template.stop])
    for prompt in prompts:
        out.print()
        out.print(f"[bold cyan]prompt:[/] {escape(prompt)}")
        out.print("[bold green]output:[/] ", end="")
        out.file.flush()
        final = None
        chat = template.render([{"role": "user", "content": prompt}])
        async for o in client.stream(chat, params):
            sys.stdout.write(o.new_text)
            sys.stdout.flush()
            final = o
        out.print()
        if final.finish_reason == "error":
            out.print(f"[bold red]error:[/] {escape(final.error or '')}")
        finals.append(final)
    return finals


def run_plain(client, prompts: list[str], params: SamplingParams, out: Console,
              template: ChatTemplate) -> None:
    """Each prompt is one user turn rendered with ``template``; replies stop at its stops."""
    t0 = time.perf_counter()
    outs = asyncio.run(_stream(client, prompts, params, out, template))
    wall = time.perf_counter() - t0
    table = Table(title="latency per request", title_justify="left")
    for col in ("#", "prompt tokens", "output tokens", "finish", "TTFT", "TPOT"):
        table.add_column(col, justify="right" if col != "finish" else "left")
    for i, o in enumerate(outs):
        lc = o.lifecycle
        table.add_row(str(i), str(len(o.prompt_token_ids)), str(len(o.token_ids)),
                      o.finish_reason or "-", ms(lc.ttft), ms(lc.tpot))
    out.print()
    out.print(table)
    n = sum(len(o.token_ids) for o in outs)
    out.print(f"{n} tokens in {wall:.2f} s ({n / wall:.1f} tokens/s)")
