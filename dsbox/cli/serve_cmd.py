"""``dsbox serve [MODEL]``: the OpenAI-compatible server (see :mod:`dsbox.server`).

Start-up: the options are checked, the port is bound (a busy one is one error line before
anything loads), the placement is chosen (``--placement auto``: the rule is printed), the
engine loads with a line per stage, then one line says where it listens. Engine options
come from ``EngineConfig`` and server options from ``ServerConfig`` (``dsbox.cli.options``).
"""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from dsbox.cli.errors import user_errors
from dsbox.cli.options import PANEL, with_dataclass_options
from dsbox.config import DEFAULT_MODEL, EngineConfig
from dsbox.server.config import API_KEY_ENV, ServerConfig

SERVER_PANEL = "Server options (ServerConfig)"


def serve(
    model: Annotated[str, typer.Argument(help="registry name (see `dsbox models`) or a "
                                              "checkpoint directory")] = DEFAULT_MODEL,
    placement: Annotated[str, typer.Option(
        help="auto (the default rule, printed at start-up) or a placement such as "
             "'prefill:tp=1;decode:tp=1'")] = "auto",
    *,
    groups: dict,
) -> None:
    """Serve MODEL over HTTP with OpenAI's API (/v1/completions, /v1/chat/completions,
    /v1/models), /health and Prometheus /metrics."""
    from dsbox.chat_template import ChatTemplate
    from dsbox.cli.placement_choice import choose_placement
    from dsbox.client import open_engine
    from dsbox.devices import discover_devices
    from dsbox.engine.model.source import resolve_model
    from dsbox.server.app import make_app
    from dsbox.server.run import bind, interrupt_on_sigterm, url_of
    from dsbox.server.run import serve as run_server

    interrupt_on_sigterm()
    out = Console(highlight=False, soft_wrap=True)
    engine_kwargs = groups[""]
    with user_errors():
        cfg = ServerConfig(**groups["server_"])
        api_key = cfg.api_key or os.environ.get(API_KEY_ENV) or None
        template = ChatTemplate.from_file(cfg.chat_template) if cfg.chat_template else None
        spec = resolve_model(model, engine_kwargs.get("dummy_weights", False)).spec
        choice = choose_placement(placement, spec, discover_devices(engine_kwargs["device"]))
        config = EngineConfig(model=model, placement=choice.placement, **engine_kwargs)
        sock = bind(cfg.host, cfg.port)
    out.print(f"placement {escape(choice.placement)} ({escape(choice.rule)})")
    with user_errors():
        client = open_engine(config, on_progress=lambda msg: out.print(f"  {escape(msg)}"))
    try:
        app = make_app(client, model_name=cfg.served_model_name, chat_template=template,
                       api_key=api_key, max_waiting=cfg.max_waiting)
        name = cfg.served_model_name or client.spec.name
        out.print(f"serving {escape(name)} on {url_of(sock)} (OpenAI API under /v1, "
                  f"/health, /metrics){'; API key required' if api_key else ''}")
        run_server(app, sock)
    finally:
        client.close()
        sock.close()


def register(app: typer.Typer) -> None:
    command = with_dataclass_options(
        (EngineConfig, "", PANEL, ("model", "placement")),
        (ServerConfig, "server_", SERVER_PANEL, ()))(serve)
    app.command("serve")(command)
