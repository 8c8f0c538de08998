"""Resolving a model name to its shapes, weights and tokenizer, offline.

Order: an existing local directory; the dsbox models directory (``$DSBOX_MODELS`` or
``~/.cache/dsbox/models``); the HF hub cache layout on disk (``$HF_HUB_CACHE``,
``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``). Nothing is ever downloaded. A bundled
registry model is either a checkpoint shipped inside the package (a ``path`` entry, like the
default ``dsbox-chat``) or needs no files at all (``opt-tiny``: random weights, seed 0, and
the bundled tokenizer).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from dsbox.config import ModelSpec, get_model_spec, load_registry


class ModelNotFoundError(FileNotFoundError):
    """No weights for a model name; the message lists the paths tried and how to get them."""


@dataclass(frozen=True, slots=True)
class ModelSource:
    spec: ModelSpec
    weights_dir: Path | None     # None: random weights (opt-tiny or dummy_weights)
    tokenizer_dir: Path | None   # None: the bundled GPT-2 BPE tokenizer
    where: str                   # human-readable origin, for `dsbox models` and logs


def models_dir() -> Path:
    return Path(os.environ.get("DSBOX_MODELS", Path.home() / ".cache" / "dsbox" / "models"))


def hf_hub_cache() -> Path:
    if "HF_HUB_CACHE" in os.environ:
        return Path(os.environ["HF_HUB_CACHE"])
    if "HF_HOME" in os.environ:
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def _hub_snapshot(repo_id: str) -> tuple[Path | None, Path]:
    """The snapshot directory of ``repo_id`` in the HF cache (refs/main first), and the repo
    folder looked at."""
    repo_dir = hf_hub_cache() / ("models--" + repo_id.replace("/", "--"))
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        snap = repo_dir / "snapshots" / ref.read_text().strip()
        if (snap / "config.json").is_file():
            return snap, repo_dir
    snaps = repo_dir / "snapshots"
    if snaps.is_dir():
        for snap in sorted(snaps.iterdir()):
            if (snap / "config.json").is_file():
                return snap, repo_dir
    return None, repo_dir


def _has_tokenizer(path: Path) -> bool:
    return (path / "tokenizer.json").is_file() or (path / "vocab.json").is_file()


def _from_dir(path: Path, where: str, registry: ModelSpec | None = None) -> ModelSource:
    """A checkpoint directory. Its ``config.json`` gives the shapes (it describes the weights
    that are there); a registry entry found by name only lends its name, repo, description
    and defaults (SLO preset, placement)."""
    if not (path / "config.json").is_file():
        what = "is empty" if not any(path.iterdir()) else "has no config.json"
        raise ModelNotFoundError(f"{path} {what}: a checkpoint directory holds the model's "
                                 "config.json and its weights (Hugging Face layout)")
    spec = ModelSpec.from_hf_dir(path)
    if registry is not None:
        spec = replace(spec, name=registry.name, hf_repo=registry.hf_repo,
                       description=registry.description, bundled=registry.bundled,
                       path=registry.path, default_slo=registry.default_slo,
                       default_placement=registry.default_placement)
    return ModelSource(spec, path, path if _has_tokenizer(path) else None, where)


def candidate_paths(name: str) -> list[Path]:
    """Where a registry model's weights are looked for, in order."""
    key = name.lower().removeprefix("facebook/")
    spec = load_registry().get(key)
    if spec is not None and spec.bundled_dir is not None:
        return [spec.bundled_dir]
    paths = [models_dir() / key]
    if spec is not None and spec.hf_repo:
        paths.append(_hub_snapshot(spec.hf_repo)[1])
    return paths


def resolve_model(name: str, dummy_weights: bool = False) -> ModelSource:
    """Resolve a model name or checkpoint path. With ``dummy_weights`` a registry model needs
    no files (random weights of the real shapes)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return _from_dir(path, f"local directory {path}")
    if os.sep in name and not name.lower().startswith("facebook/"):
        raise ModelNotFoundError(f"{path}: no such checkpoint directory")
    try:
        spec = get_model_spec(name)
    except KeyError as exc:
        raise ModelNotFoundError(
            f"{name!r} is neither a checkpoint directory nor a known model ({exc.args[0]})"
        ) from None
    if spec.bundled_dir is not None:
        return _from_dir(spec.bundled_dir, f"bundled checkpoint {spec.bundled_dir}", spec)
    if spec.bundled:
        return ModelSource(spec, None, None, "bundled (random weights, seed 0)")
    local = models_dir() / spec.name
    if (local / "config.json").is_file():
        return _from_dir(local, f"dsbox models dir {local}", spec)
    snap, repo_dir = _hub_snapshot(spec.hf_repo) if spec.hf_repo else (None, None)
    if snap is not None:
        return _from_dir(snap, f"HF cache {snap}", spec)
    if dummy_weights:
        return ModelSource(spec, None, None, "dummy weights (random, real shapes)")
    tried = [str(local)] + ([str(repo_dir)] if repo_dir else [])
    get = (f"download them on a machine with network access (e.g. `huggingface-cli download "
           f"{spec.hf_repo}`) and copy the folder to {local}" if spec.hf_repo
           else spec.description or "no public weights")
    raise ModelNotFoundError(
        f"no weights for {spec.name}: tried {', '.join(tried)}. To get them, {get}; "
        "or pass --dummy-weights for random weights of the real shapes.")
