"""KV handoff from prefill workers to decode workers, re-sharding on the way.

Each worker's pool holds some layers (its pipeline stage) and some heads (its TP rank) of
every block: ``[stage_layers, 2, num_blocks, block_size, local_heads, head_dim]``. A decode
worker pulls a request's blocks from every prefill worker whose (layers x heads) share
overlaps its own, so any pair of TP/PP configurations works. Pools are shared once at
start-up (CUDA IPC handles on GPU, shared memory on CPU); per request only block ids move.
The copy is device to device (NVLink, or the same GPU); nothing is staged on the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class PoolShard:
    """Which part of the model's KV a pool tensor holds."""

    layers: range
    heads: range


def _overlap(a: range, b: range) -> range:
    return range(max(a.start, b.start), min(a.stop, b.stop))


def pull_blocks(dst_pool: torch.Tensor, dst: PoolShard, dst_blocks: list[int],
                sources: list[tuple[torch.Tensor, PoolShard]], src_blocks: list[int]) -> int:
    """Copy blocks ``src_blocks`` of every source pool into ``dst_blocks`` of ``dst_pool``
    (pairwise: the i-th source block lands in the i-th destination block), for the layers
    and heads both sides hold. Returns the bytes copied."""
    n = len(src_blocks)
    if n > len(dst_blocks):
        raise ValueError(f"{n} source blocks but only {len(dst_blocks)} destination blocks")
    copied = 0
    dst_idx = torch.tensor(dst_blocks[:n], dtype=torch.long, device=dst_pool.device)
    for src_pool, src in sources:
        layers = _overlap(dst.layers, src.layers)
        heads = _overlap(dst.heads, src.heads)
        if not layers or not heads:
            continue
        src_idx = torch.tensor(src_blocks, dtype=torch.long, device=src_pool.device)
        sl = slice(layers.start - src.layers.start, layers.stop - src.layers.start)
        sh = slice(heads.start - src.heads.start, heads.stop - src.heads.start)
        part = src_pool[sl, :, :, :, sh].index_select(2, src_idx)
        if part.device != dst_pool.device:
            part = part.to(dst_pool.device, non_blocking=True)
        dl = slice(layers.start - dst.layers.start, layers.stop - dst.layers.start)
        dh = slice(heads.start - dst.heads.start, heads.stop - dst.heads.start)
        dst_pool[dl, :, :, :, dh].index_copy_(2, dst_idx, part)
        copied += part.numel() * part.element_size()
    return copied
