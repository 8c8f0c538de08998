"""How the command line reports trouble: one ``error:`` line and exit code 2, or a
``warning:`` line, never a traceback for input a user can get wrong.

:func:`user_errors` turns the exceptions that mean "bad input" (a wrong value, a missing
file or model, an unreadable checkpoint, a worker that could not start) into one line;
anything else is a bug and keeps its traceback. Messages are printed with rich markup
escaped, so ``[...]`` in a message survives. :func:`show_warnings` prints the ``dsbox``
logger's records as one ``warning:`` (or ``error:``) line each.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

EXIT_USAGE = 2


def err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str) -> typer.Exit:
    """Print one error line to stderr; the caller raises the returned Exit (code 2)."""
    first = (message.strip().splitlines() or [""])[0]
    err_console().print(f"[bold red]error:[/] {escape(first)}")
    return typer.Exit(EXIT_USAGE)


def _user_error_types() -> tuple[type[BaseException], ...]:
    from dsbox.engine.model.weights import WeightsError
    from dsbox.engine.runtime.launch import EngineStartupError

    return (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, KeyError,
            WeightsError, EngineStartupError)


def message_of(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn bad-input exceptions raised inside into one error line and exit code 2."""
    try:
        yield
    except (typer.Exit, KeyboardInterrupt):  # before the next clause imports torch (an
        raise                                # interrupted import would fail in it)
    except _user_error_types() as exc:
        raise fail(message_of(exc)) from None


class _OneLine(logging.Handler):
    """``warning: ...`` / ``error: ...``: the first line of each record, no traceback."""

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().strip().splitlines()
        if not text:
            return
        label = "[bold yellow]warning:[/]" if record.levelno < logging.ERROR \
            else "[bold red]error:[/]"
        err_console().print(f"{label} {escape(text[0])}")


def show_warnings() -> None:
    """Print the ``dsbox`` logger's warnings and errors as one line each on stderr."""
    logger = logging.getLogger("dsbox")
    if not any(isinstance(h, _OneLine) for h in logger.handlers):
        logger.addHandler(_OneLine(logging.WARNING))
        logger.propagate = False
