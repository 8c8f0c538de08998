"""The ``dsbox`` command line: one typer app; each command lives in its own module here.

A command module defines ``register(app)``; adding a command is one line in ``COMMANDS``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Annotated

import typer

COMMANDS = ("models", "run", "serve", "plan", "profile", "bench")


def make_app() -> typer.Typer:
    app = typer.Typer(
        name="dsbox",
        help="Disaggregated prefill/decode LLM serving (DistServe) on one box.",
        no_args_is_help=False,
        add_completion=False,
        pretty_exceptions_show_locals=False,
    )
    app.callback()(_global_options)
    for name in COMMANDS:
        importlib.import_module(f"dsbox.cli.{name}_cmd").register(app)
    return app


def _global_options(
    models_file: Annotated[Path | None, typer.Option(
        "--models-file", envvar="DSBOX_MODELS_TOML", dir_okay=False,
        help="the model registry to use instead of the one shipped with dsbox "
             "(models.toml format; also $DSBOX_MODELS_TOML)")] = None,
) -> None:
    """Disaggregated prefill/decode LLM serving (DistServe) on one box."""
    from dsbox.config.model_spec import MODELS_TOML_ENV

    if models_file is not None:
        if not models_file.is_file():
            from dsbox.cli.errors import fail

            raise fail(f"--models-file {models_file}: no such file")
        os.environ[MODELS_TOML_ENV] = str(models_file.resolve())


def main() -> None:
    """The console script: bad usage (an unknown option, a value of the wrong type) ends in
    one ``error:`` line and exit code 2, like every other bad input."""
    import sys

    from dsbox.cli.errors import EXIT_USAGE, fail, show_warnings

    show_warnings()
    command = typer.main.get_command(make_app())
    try:
        code = command.main(standalone_mode=False, prog_name="dsbox")
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except Exception as exc:
        if not hasattr(exc, "format_message"):  # not a usage error (click's, or typer's own
            raise                               # copy of click's): a bug, keep the traceback
        ctx = getattr(exc, "ctx", None)
        where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        fail(exc.format_message() + where)
        sys.exit(getattr(exc, "exit_code", EXIT_USAGE))
    sys.exit(code or 0)
