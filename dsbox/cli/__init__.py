"""The ``dsbox`` command line: one typer app; each command lives in its own module here.

A command module defines ``register(app)``; adding a command is one line in ``COMMANDS``.
"""

from __future__ import annotations

import importlib

import typer

COMMANDS = ("models", "run", "plan", "profile")


def make_app() -> typer.Typer:
    app = typer.Typer(
        name="dsbox",
        help="Disaggregated prefill/decode LLM serving (DistServe) on one box.",
        no_args_is_help=False,
        add_completion=False,
        pretty_exceptions_show_locals=False,
    )
    for name in COMMANDS:
        importlib.import_module(f"dsbox.cli.{name}_cmd").register(app)
    return app


def main() -> None:
    make_app()()
