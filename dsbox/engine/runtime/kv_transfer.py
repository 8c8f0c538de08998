"""KV handoff from prefill workers to decode workers, re-sharding on the way.

Each worker's pool holds some layers (its pipeline stage) and some heads (its TP rank) of
every block: ``[stage_layers, 2, num_blocks, block_size, local_heads, head_dim]``. A decode
worker pulls a request's blocks from every prefill worker whose (layers x heads) share
overlaps its own, so any pair of TP/PP configurations works. Pools are shared once at
start-up (CUDA IPC handles on GPU, shared memory on CPU); per request only block ids move.

The copy reads each byte once and writes it once, straight into the decode pool: no
gathered temporary, nothing allocated on the prefill GPU (only the block-pair list, on the
destination). Source and destination on one CUDA device: one ``copy_blocks`` kernel launch
per source, on the destination's current stream. On two CUDA devices: one ``copy_`` per run
of consecutive blocks (torch copies peer to peer). On the CPU: the same runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsbox.kernels.kv_copy import copy_blocks_ref


@dataclass(frozen=True, slots=True)
class PoolShard:
    """Which part of the model's KV a pool tensor holds."""

    layers: range
    heads: range


def _overlap(a: range, b: range) -> range:
    return range(max(a.start, b.start), min(a.stop, b.stop))


def _pairs_on(device: torch.device, pairs: list[tuple[int, int]]) -> torch.Tensor:
    host = torch.tensor(pairs, dtype=torch.int32).view(-1, 2)
    if device.type != "cuda":
        return host
    return host.pin_memory().to(device, non_blocking=True)


def pull_blocks(dst_pool: torch.Tensor, dst: PoolShard, dst_blocks: list[int],
                sources: list[tuple[torch.Tensor, PoolShard]], src_blocks: list[int]) -> int:
    """Copy blocks ``src_blocks`` of every source pool into ``dst_blocks`` of ``dst_pool``
    (pairwise: the i-th source block lands in the i-th destination block), for the layers
    and heads both sides hold. Returns the KV bytes copied (each read once, written once)."""
    n = len(src_blocks)
    if n > len(dst_blocks):
        raise ValueError(f"{n} source blocks but only {len(dst_blocks)} destination blocks")
    pairs = list(zip(src_blocks, dst_blocks[:n], strict=True))
    pairs_dev: torch.Tensor | None = None
    copied = 0
    for src_pool, src in sources:
        layers = _overlap(dst.layers, src.layers)
        heads = _overlap(dst.heads, src.heads)
        if not layers or not heads or not pairs:
            continue
        sl = slice(layers.start - src.layers.start, layers.stop - src.layers.start)
        sh = slice(heads.start - src.heads.start, heads.stop - src.heads.start)
        dl = slice(layers.start - dst.layers.start, layers.stop - dst.layers.start)
        dh = slice(heads.start - dst.heads.start, heads.stop - dst.heads.start)
        src_view = src_pool[sl, :, :, :, sh]
        dst_view = dst_pool[dl, :, :, :, dh]
        if dst_pool.device.type == "cuda" and src_pool.device == dst_pool.device:
            from dsbox.kernels.kv_copy import copy_blocks

            if pairs_dev is None:
                pairs_dev = _pairs_on(dst_pool.device, pairs)
            copy_blocks(src_view, dst_view, pairs_dev)
        else:
            copy_blocks_ref(src_view, dst_view, pairs)
        copied += n * src_view[:, :, 0].numel() * src_view.element_size()
    return copied
