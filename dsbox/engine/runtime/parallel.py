"""Tensor and pipeline parallelism, applied to the model from outside.

The model file knows nothing of this. ``ParallelContext`` says which shard a worker holds;
``shard_model`` rewrites a model built on the meta device (before any weight is loaded):

- TP (Megatron style): q/k/v and fc1 become column-parallel (a slice of output rows, so a
  slice of attention heads); out_proj and fc2 row-parallel (a slice of input columns) and
  all-reduce their output over the TP group; their bias is added once, after the reduce.
- PP: a stage keeps only its layers; the others are dropped and never loaded.

It returns the ``shard`` hook that the weight loader calls to read only this rank's slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from dsbox.config import ModelSpec


@dataclass(frozen=True, slots=True)
class ParallelContext:
    tp_size: int = 1
    tp_rank: int = 0
    pp_size: int = 1
    pp_rank: int = 0
    tp_group: object | None = None  # torch.distributed group of this stage's TP ranks

    def layer_range(self, num_layers: int) -> range:
        return stage_layers(num_layers, self.pp_size, self.pp_rank)

    def head_range(self, num_heads: int) -> range:
        per = num_heads // self.tp_size
        return range(self.tp_rank * per, (self.tp_rank + 1) * per)

    @property
    def is_first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.pp_size - 1


def stage_layers(num_layers: int, pp_size: int, pp_rank: int) -> range:
    """Layers of stage ``pp_rank``: contiguous, as equal as possible (earlier stages get the
    extra layer)."""
    base, extra = divmod(num_layers, pp_size)
    start = pp_rank * base + min(pp_rank, extra)
    return range(start, start + base + (1 if pp_rank < extra else 0))


def check_divisible(spec: ModelSpec, tp: int, pp: int) -> None:
    if spec.num_heads % tp:
        raise ValueError(f"{spec.name}: {spec.num_heads} heads are not divisible by tp={tp}")
    if spec.ffn_dim % tp:
        raise ValueError(f"{spec.name}: ffn_dim {spec.ffn_dim} is not divisible by tp={tp}")
    if pp > spec.num_layers:
        raise ValueError(f"{spec.name}: pp={pp} exceeds its {spec.num_layers} layers")


class RowParallelLinear(nn.Linear):
    """A Linear over a slice of its input features whose partial outputs are summed over
    the TP group; the bias is added once, after the reduce."""

    def __init__(self, in_features: int, out_features: int, group: object) -> None:
        super().__init__(in_features, out_features)
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight)
        dist.all_reduce(y, group=self.group)
        return y + self.bias


def _column(linear: nn.Linear, tp: int) -> nn.Linear:
    return nn.Linear(linear.in_features, linear.out_features // tp, device="meta")


def shard_model(model: nn.Module, spec: ModelSpec, ctx: ParallelContext):
    """Rewrite ``model`` (on meta) for this rank; returns the weight loader's shard hook."""
    check_divisible(spec, ctx.tp_size, ctx.pp_size)
    full_shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    keep = set(ctx.layer_range(spec.num_layers))
    layers = model.decoder.layers
    for i in range(len(layers)):
        if i not in keep:
            layers[i] = nn.Module()  # no parameters: never loaded, never run
            continue
        if ctx.tp_size == 1:
            continue
        attn = layers[i].self_attn
        for proj in ("q_proj", "k_proj", "v_proj"):
            setattr(attn, proj, _column(getattr(attn, proj), ctx.tp_size))
        with torch.device("meta"):
            attn.out_proj = RowParallelLinear(spec.hidden_size // ctx.tp_size,
                                              spec.hidden_size, ctx.tp_group)
            layers[i].fc2 = RowParallelLinear(spec.ffn_dim // ctx.tp_size, spec.hidden_size,
                                              ctx.tp_group)
        layers[i].fc1 = _column(layers[i].fc1, ctx.tp_size)
    params = dict(model.named_parameters())
    model.full_shapes = {n: s for n, s in full_shapes.items() if n in params}
    tp, r = ctx.tp_size, ctx.tp_rank

    def shard(name: str, sl, shape: tuple[int, ...]) -> torch.Tensor:
        if tp == 1 or ".layers." not in name:
            return sl[:] if not isinstance(sl, torch.Tensor) else sl
        leaf = name.split(".layers.", 1)[1].split(".", 1)[1]  # e.g. self_attn.q_proj.weight
        if leaf.startswith(("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "fc1")):
            n = shape[0] // tp
            return sl[r * n:(r + 1) * n]  # weight rows / bias entries
        if leaf in ("self_attn.out_proj.weight", "fc2.weight"):
            n = shape[1] // tp
            return sl[:, r * n:(r + 1) * n]
        return sl[:] if not isinstance(sl, torch.Tensor) else sl

    return shard
