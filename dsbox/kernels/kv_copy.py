"""Copy KV blocks from one paged pool to another on the same device (the KV handoff).

Shapes:
    src, dst      [num_layers, 2, num_blocks, block_size, num_heads, head_dim]: two pools,
                  or the same layer and head slice of two pools (strided views allowed, last
                  dim contiguous). They agree on every dim but num_blocks, and on dtype.
    block_pairs   int32 or int64 [n, 2]: row i copies block ``block_pairs[i, 0]`` of ``src``
                  into block ``block_pairs[i, 1]`` of ``dst``, in every layer, K and V.

Grid: (n, num_layers * 2); one program copies one block of one layer's K or V
(block_size x num_heads rows of head_dim). Every byte is read once and written once;
nothing is allocated, so a handoff needs no headroom beyond the pair list.

The torch reference copies maximal runs of consecutive blocks with ``copy_`` (one strided
copy per run): it is the CPU path, and the path between two CUDA devices, where torch runs
the copy peer to peer (``copy_`` between devices without peer access stages through host
memory).
"""

from __future__ import annotations

import torch

from dsbox.kernels._common import check_dtype, launchable, next_power_of_2

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the torch reference works without triton
    triton = None

__all__ = ["block_runs", "copy_blocks", "copy_blocks_ref"]


if triton is not None:

    @triton.jit
    def _copy_blocks_kernel(
        src_ptr,
        dst_ptr,
        pairs_ptr,
        num_heads,
        num_rows,
        s_stride_l,
        s_stride_kv,
        s_stride_b,
        s_stride_s,
        s_stride_h,
        d_stride_l,
        d_stride_kv,
        d_stride_b,
        d_stride_s,
        d_stride_h,
        HEAD_DIM: tl.constexpr,
        BLOCK_R: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        pair = tl.program_id(0).to(tl.int64)
        layer_kv = tl.program_id(1).to(tl.int64)
        layer = layer_kv // 2
        kv = layer_kv % 2
        src_block = tl.load(pairs_ptr + 2 * pair).to(tl.int64)
        dst_block = tl.load(pairs_ptr + 2 * pair + 1).to(tl.int64)
        src = src_ptr + layer * s_stride_l + kv * s_stride_kv + src_block * s_stride_b
        dst = dst_ptr + layer * d_stride_l + kv * d_stride_kv + dst_block * d_stride_b
        offs_d = tl.arange(0, BLOCK_D)
        d_mask = offs_d < HEAD_DIM
        for r0 in range(0, num_rows, BLOCK_R):
            rows = r0 + tl.arange(0, BLOCK_R)
            slot = rows // num_heads
            head = rows % num_heads
            mask = (rows < num_rows)[:, None] & d_mask[None, :]
            x = tl.load(src + (slot * s_stride_s + head * s_stride_h)[:, None] + offs_d[None, :],
                        mask=mask)
            tl.store(dst + (slot * d_stride_s + head * d_stride_h)[:, None] + offs_d[None, :],
                     x, mask=mask)


def _check(src: torch.Tensor, dst: torch.Tensor, block_pairs: torch.Tensor) -> None:
    for name, t in (("src", src), ("dst", dst)):
        if t.dim() != 6 or t.stride(5) != 1:
            raise ValueError(f"{name} must be [num_layers, 2, num_blocks, block_size, "
                             "num_heads, head_dim], last dim contiguous")
        check_dtype(name, t)
    if src.dtype != dst.dtype:
        raise ValueError(f"src dtype {src.dtype} != dst dtype {dst.dtype}")
    if src.shape[:2] != dst.shape[:2] or src.shape[3:] != dst.shape[3:]:
        raise ValueError(f"src {tuple(src.shape)} and dst {tuple(dst.shape)} differ in more "
                         "than num_blocks")
    if block_pairs.dim() != 2 or block_pairs.shape[1] != 2:
        raise ValueError("block_pairs must be [n, 2]")
    if block_pairs.dtype not in (torch.int32, torch.int64):
        raise ValueError("block_pairs must be int32 or int64")


def copy_blocks(src: torch.Tensor, dst: torch.Tensor, block_pairs: torch.Tensor) -> None:
    """Copy blocks of ``src`` into ``dst`` (both on one device, ``block_pairs`` too)."""
    _check(src, dst, block_pairs)
    if triton is None:
        raise RuntimeError("triton is not installed; use copy_blocks_ref")
    if src.device != dst.device or block_pairs.device != dst.device:
        raise ValueError(f"copy_blocks runs on one device: src on {src.device}, dst on "
                         f"{dst.device}, block_pairs on {block_pairs.device}")
    n = block_pairs.shape[0]
    num_layers, _, _, block_size, num_heads, head_dim = dst.shape
    if n == 0 or num_layers == 0 or num_heads == 0:
        return
    block_d = next_power_of_2(head_dim)
    block_r = max(1, 4096 // block_d)
    kernel = launchable(_copy_blocks_kernel, dst.device)
    kernel[(n, num_layers * 2)](
        src,
        dst,
        block_pairs.contiguous(),
        num_heads,
        block_size * num_heads,
        *src.stride()[:5],
        *dst.stride()[:5],
        HEAD_DIM=head_dim,
        BLOCK_R=block_r,
        BLOCK_D=block_d,
        num_warps=4,
    )


def block_runs(pairs: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Maximal runs of consecutive pairs: ``(src_start, dst_start, length)``."""
    runs: list[tuple[int, int, int]] = []
    for s, d in pairs:
        if runs:
            s0, d0, n = runs[-1]
            if s == s0 + n and d == d0 + n:
                runs[-1] = (s0, d0, n + 1)
                continue
        runs.append((s, d, 1))
    return runs


def copy_blocks_ref(src: torch.Tensor, dst: torch.Tensor,
                    block_pairs: torch.Tensor | list[tuple[int, int]]) -> None:
    """Torch reference of :func:`copy_blocks`: one ``copy_`` per run of consecutive blocks.
    ``src`` and ``dst`` may be on different devices; ``block_pairs`` may be a list."""
    if isinstance(block_pairs, torch.Tensor):
        _check(src, dst, block_pairs)
        pairs = [tuple(p) for p in block_pairs.tolist()]
    else:
        pairs = [tuple(p) for p in block_pairs]
        _check(src, dst, torch.tensor(pairs, dtype=torch.int64).view(-1, 2))
    for s, d, n in block_runs(pairs):
        dst[:, :, d:d + n].copy_(src[:, :, s:s + n], non_blocking=True)
