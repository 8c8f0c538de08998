"""Paged KV write: scatter new tokens' K and V into their cache slots.

Shapes:
    key, value      [num_tokens, num_heads, head_dim]  (last dim contiguous; may be views)
    k_cache/v_cache [num_blocks, block_size, num_heads, head_dim]  (strided views allowed)
    slot_mapping    int32 or int64 [num_tokens]; slot = block_id * block_size + offset,
                    -1 = skip this token.

Supported: fp16, bf16, fp32 (the cache dtype may differ from key's: values are cast);
any head_dim (padded to a power of two with masks); any block size.
Grid: (num_tokens, cdiv(num_heads, BLOCK_H)); one program copies BLOCK_H heads of one token.
"""

from __future__ import annotations

import torch

from dsbox.kernels._common import (
    check_cache,
    check_dtype,
    launchable,
    next_power_of_2,
)

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the torch reference works without triton
    triton = None

__all__ = ["write_kv", "write_kv_ref"]


if triton is not None:

    @triton.jit
    def _write_kv_kernel(
        key_ptr,
        value_ptr,
        k_cache_ptr,
        v_cache_ptr,
        slot_ptr,
        stride_kt,
        stride_kh,
        stride_vt,
        stride_vh,
        stride_kcb,
        stride_kcs,
        stride_kch,
        stride_vcb,
        stride_vcs,
        stride_vch,
        num_heads,
        block_size,
        HEAD_DIM: tl.constexpr,
        BLOCK_H: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        tok = tl.program_id(0).to(tl.int64)
        head_block = tl.program_id(1)
        slot = tl.load(slot_ptr + tok).to(tl.int64)
        valid = slot >= 0
        slot = tl.where(valid, slot, 0)
        block = slot // block_size
        offset = slot % block_size
        heads_to_copy = tl.where(valid, num_heads, 0)  # slot -1: copy nothing

        offs_h = head_block * BLOCK_H + tl.arange(0, BLOCK_H)
        offs_d = tl.arange(0, BLOCK_D)
        mask = (offs_h[:, None] < heads_to_copy) & (offs_d[None, :] < HEAD_DIM)

        k = tl.load(
            key_ptr + tok * stride_kt + offs_h[:, None] * stride_kh + offs_d[None, :], mask=mask
        )
        v = tl.load(
            value_ptr + tok * stride_vt + offs_h[:, None] * stride_vh + offs_d[None, :], mask=mask
        )
        k_dst = k_cache_ptr + block * stride_kcb + offset * stride_kcs
        v_dst = v_cache_ptr + block * stride_vcb + offset * stride_vcs
        tl.store(
            k_dst + offs_h[:, None] * stride_kch + offs_d[None, :],
            k.to(k_cache_ptr.dtype.element_ty),
            mask=mask,
        )
        tl.store(
            v_dst + offs_h[:, None] * stride_vch + offs_d[None, :],
            v.to(v_cache_ptr.dtype.element_ty),
            mask=mask,
        )


def _check(key, value, k_cache, v_cache, slot_mapping) -> None:
    for name, t in (("key", key), ("value", value)):
        if t.dim() != 3 or t.stride(2) != 1:
            raise ValueError(
                f"{name} must be [num_tokens, num_heads, head_dim], last dim contiguous"
            )
        check_dtype(name, t)
    check_cache("k_cache", k_cache)
    check_cache("v_cache", v_cache)
    if key.shape != value.shape:
        raise ValueError("key and value shapes differ")
    if k_cache.shape != v_cache.shape:
        raise ValueError("k_cache and v_cache shapes differ")
    if key.shape[1:] != k_cache.shape[2:]:
        raise ValueError(f"key heads/head_dim {tuple(key.shape[1:])} != cache {k_cache.shape[2:]}")
    if slot_mapping.dim() != 1 or slot_mapping.shape[0] != key.shape[0]:
        raise ValueError("slot_mapping must be [num_tokens]")
    if slot_mapping.dtype not in (torch.int32, torch.int64):
        raise ValueError("slot_mapping must be int32 or int64")


def _launch_write_kv(key, value, k_cache, v_cache, slot_mapping) -> None:
    num_tokens, num_heads, head_dim = key.shape
    if num_tokens == 0:
        return
    block_d = next_power_of_2(head_dim)
    block_h = min(next_power_of_2(num_heads), max(1, 4096 // block_d))
    grid = (num_tokens, triton.cdiv(num_heads, block_h))
    kernel = launchable(_write_kv_kernel, key.device)
    kernel[grid](
        key,
        value,
        k_cache,
        v_cache,
        slot_mapping.contiguous(),
        key.stride(0),
        key.stride(1),
        value.stride(0),
        value.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        v_cache.stride(0),
        v_cache.stride(1),
        v_cache.stride(2),
        num_heads,
        k_cache.shape[1],
        HEAD_DIM=head_dim,
        BLOCK_H=block_h,
        BLOCK_D=block_d,
        num_warps=4,
    )


def write_kv(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Write ``key``/``value`` [num_tokens, num_heads, head_dim] into the paged caches at
    ``slot_mapping`` (slot = block_id * block_size + offset; -1 skips the token)."""
    _check(key, value, k_cache, v_cache, slot_mapping)
    if triton is None:
        raise RuntimeError("triton is not installed; use write_kv_ref")
    _launch_write_kv(key, value, k_cache, v_cache, slot_mapping)


def write_kv_ref(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Torch reference of :func:`write_kv` (vectorised; the engine's CPU path)."""
    _check(key, value, k_cache, v_cache, slot_mapping)
    block_size = k_cache.shape[1]
    slots = slot_mapping.to(torch.int64)
    keep = slots >= 0
    if not bool(keep.all()):
        slots, key, value = slots[keep], key[keep], value[keep]
    blocks = torch.div(slots, block_size, rounding_mode="floor")
    offsets = slots % block_size
    k_cache[blocks, offsets] = key.to(k_cache.dtype)
    v_cache[blocks, offsets] = value.to(v_cache.dtype)
