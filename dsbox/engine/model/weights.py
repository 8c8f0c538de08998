"""Finding and loading OPT weights: HF safetensors (single or sharded), pytorch_model.bin.

The model is built on the meta device and each tensor is read straight from the (mmapped)
checkpoint into its final dtype and device, so the weights are never held twice. A
``shard`` hook lets tensor parallelism read only its slice of a tensor.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from dsbox.config import ModelSpec

# (name in our model, slice-able tensor, full shape) -> the tensor this rank keeps
ShardFn = Callable[[str, object, tuple[int, ...]], torch.Tensor]


class WeightsError(RuntimeError):
    """A checkpoint that cannot be loaded; the message names the file and the tensor."""


def checkpoint_files(path: Path) -> list[Path]:
    """The weight files of an HF checkpoint directory, in load order."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return _shards(index)
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    bin_index = path / "pytorch_model.bin.index.json"
    if bin_index.is_file():
        return _shards(bin_index)
    single_bin = path / "pytorch_model.bin"
    if single_bin.is_file():
        return [single_bin]
    raise WeightsError(
        f"{path}: no weights found (looked for model.safetensors.index.json, "
        "model.safetensors, pytorch_model.bin.index.json, pytorch_model.bin)")


def _shards(index: Path) -> list[Path]:
    """The shard files named by a ``*.index.json``; all of them must exist."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted({index.parent / f for f in weight_map.values()})
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise WeightsError(f"{index}: not a valid checkpoint index ({exc!r})") from None
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise WeightsError(f"{index}: shard file(s) missing: "
                           + ", ".join(str(m) for m in missing))
    return files


def our_name(ckpt_name: str) -> str | None:
    """Map a checkpoint tensor name to ours; None for tensors we do not load (tied head)."""
    if ckpt_name.startswith("model."):
        ckpt_name = ckpt_name[len("model."):]
    if ckpt_name.startswith("lm_head.") or not ckpt_name.startswith("decoder."):
        return None
    return ckpt_name


def _iter_file(file: Path) -> Iterator[tuple[str, object, tuple[int, ...]]]:
    """(name, slice-able tensor, shape) for every tensor of one checkpoint file."""
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            handle = safe_open(str(file), framework="pt", device="cpu")
            with handle as f:
                for name in f.keys():
                    sl = f.get_slice(name)
                    yield name, sl, tuple(sl.get_shape())
        except WeightsError:
            raise
        except Exception as exc:  # safetensors raises its own error types
            raise WeightsError(f"{file}: cannot read safetensors file ({exc})") from exc
    else:
        try:
            state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
        except Exception as exc:
            raise WeightsError(f"{file}: cannot read checkpoint ({exc})") from exc
        for name, t in state.items():
            yield name, t, tuple(t.shape)


def _full(sl: object) -> torch.Tensor:
    return sl if isinstance(sl, torch.Tensor) else sl[:]


def _checkpoint_tensors(path: Path) -> Iterator[tuple[str, str, object, tuple[int, ...]]]:
    for file in checkpoint_files(path):
        for name, sl, shape in _iter_file(file):
            yield str(file), name, sl, shape


def _dummy_tensors(model: nn.Module, seed: int) -> Iterator[tuple[str, str, object, tuple]]:
    """A virtual checkpoint of random weights: each tensor drawn from its own seed, so every
    rank of a sharded model sees the same full tensor."""
    full_shapes = getattr(model, "full_shapes", None) or {}
    for name, param in model.named_parameters():
        shape = tuple(full_shapes.get(name, param.shape))
        if name.endswith("layer_norm.weight"):
            t = torch.ones(shape)
        elif name.endswith(".bias"):
            t = torch.zeros(shape)
        else:
            gen = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + zlib.crc32(
                name.encode()))
            t = torch.empty(shape).normal_(0.0, 0.02, generator=gen)
        yield f"<dummy weights, seed {seed}>", name, t, shape


def load_weights(model: nn.Module, path: Path | None, dtype: torch.dtype,
                 device: torch.device, shard: ShardFn | None = None,
                 dummy_seed: int = 0) -> None:
    """Fill ``model`` (built on meta) from the checkpoint at ``path``, or with random weights
    when ``path`` is None. Every parameter must be found with its expected shape or a
    WeightsError names the file and the tensor."""
    params = dict(model.named_parameters())
    expected_full = getattr(model, "full_shapes", None) or {}
    source = _checkpoint_tensors(path) if path is not None else _dummy_tensors(model, dummy_seed)
    loaded: set[str] = set()
    for file, ckpt_name, sl, shape in source:
        name = our_name(ckpt_name)
        if name is None or name not in params:
            continue
        full = tuple(expected_full.get(name, params[name].shape))
        if shape != full:
            raise WeightsError(f"{file}: tensor {ckpt_name} has shape {list(shape)}, "
                               f"expected {list(full)}")
        try:
            tensor = shard(name, sl, shape) if shard is not None else _full(sl)
            tensor = tensor.to(device=device, dtype=dtype)
        except Exception as exc:
            raise WeightsError(f"{file}: cannot read tensor {ckpt_name} ({exc})") from exc
        _assign(model, name, tensor)
        loaded.add(name)
    missing = sorted(set(params) - loaded)
    if missing:
        raise WeightsError(f"{path}: checkpoint lacks {len(missing)} tensor(s): "
                           + ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else ""))


def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    module._parameters[attr] = nn.Parameter(tensor, requires_grad=False)


def build_model(spec: ModelSpec, dtype: torch.dtype, device: torch.device,
                path: Path | None, dummy_seed: int | None = None,
                transform: Callable[[nn.Module], ShardFn | None] | None = None) -> nn.Module:
    """Build OPT on meta, optionally transform it (TP sharding), then fill it with weights
    from ``path`` or random weights when ``path`` is None."""
    from dsbox.engine.model.opt import OPTForCausalLM

    with torch.device("meta"):
        model = OPTForCausalLM(spec)
    shard = transform(model) if transform is not None else None
    load_weights(model, path, dtype, device, shard=shard, dummy_seed=dummy_seed or 0)
    return model.eval()
