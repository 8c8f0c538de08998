"""``dsbox models``: the model registry as a table, with where each model's weights are.

Columns: parameter count, fp16 weight size (GB = 10^9 bytes), KV cache per token in fp16
(KiB = 1024 bytes; K and V over all layers), and whether weights were found on disk and
where (``dsbox.engine.model.source`` does the looking, offline; nothing is downloaded).
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def weights_status(name: str) -> tuple[bool, str]:
    """(found, where): where a registry model's weights are, or the paths that were tried."""
    from dsbox.engine.model.source import ModelNotFoundError, candidate_paths, resolve_model

    try:
        source = resolve_model(name)
    except ModelNotFoundError:
        return False, "tried " + ", ".join(str(p) for p in candidate_paths(name))
    except (ValueError, OSError) as exc:  # a folder is there but its config.json is broken
        return False, f"unusable: {exc}"
    return True, source.where


def format_params(n: int) -> str:
    return f"{n / 1e9:.1f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def format_gb(n_bytes: int) -> str:
    return f"{n_bytes / 1e9:.2f} GB" if n_bytes >= 1e7 else f"{n_bytes / 1e6:.1f} MB"


def models_table() -> Table:
    from dsbox.config import load_registry
    from dsbox.engine.model.source import hf_hub_cache, models_dir

    caption = (f"weights are looked for in {models_dir()}/<name> (DSBOX_MODELS), then the HF "
               f"hub cache {hf_hub_cache()} (HF_HUB_CACHE / HF_HOME); --dummy-weights runs "
               "any model with random weights")
    table = Table(title="dsbox models", title_justify="left", caption=escape(caption),
                  caption_justify="left")
    table.add_column("model", style="bold", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("fp16 weights", justify="right", no_wrap=True)
    table.add_column("KV / token (fp16)", justify="right", no_wrap=True)
    table.add_column("layers x hidden", justify="right", no_wrap=True)
    table.add_column("HF repo", no_wrap=True)
    table.add_column("weights")
    for name, spec in load_registry().items():
        found, where = weights_status(name)
        mark = "[green]found[/]: " if found else "[yellow]missing[/]: "
        table.add_row(
            name,
            format_params(spec.num_params),
            format_gb(spec.weight_bytes("float16")),
            f"{spec.kv_bytes_per_token('float16') / 1024:g} KiB",
            f"{spec.num_layers} x {spec.hidden_size}",
            spec.hf_repo or "-",
            mark + escape(where),
        )
    return table


def models() -> None:
    """List every registry model: size, KV bytes per token, and where its weights are."""
    from dsbox.cli.errors import user_errors

    with user_errors():
        table = models_table()
    Console(highlight=False).print(table)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
