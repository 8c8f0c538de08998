"""Start the engine for ``dsbox run``, showing each start-up stage (and each worker that has
loaded its weights) as a line of progress with rich when the terminal is interactive."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from dsbox.client import EngineClient, open_engine
from dsbox.config import EngineConfig


def start_engine(config: EngineConfig, console: Console) -> EngineClient:
    """``open_engine(config)`` with a progress display on ``console`` (nothing when it is
    not a terminal: the plain mode's output stays the replies and the figures)."""
    if not console.is_terminal:
        return open_engine(config)
    columns = (SpinnerColumn(finished_text="[green]✓[/]"), TextColumn("{task.description}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        stage: list[TaskID] = []

        def on_progress(message: str) -> None:
            if message.startswith("worker "):  # one worker done, the stage goes on
                progress.add_task(f"  {escape(message)}", total=1, completed=1)
                return
            if stage:
                progress.update(stage[-1], completed=1)
            stage.append(progress.add_task(escape(message), total=1,
                                           completed=1 if message == "ready" else 0))

        return open_engine(config, on_progress=on_progress)
