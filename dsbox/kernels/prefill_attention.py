"""Causal varlen prefill attention over the paged KV cache (flash-attention style).

Shapes:
    q, out          [total_q_tokens, num_heads, head_dim]  (last dim contiguous; views allowed)
    k_cache/v_cache [num_blocks, block_size, num_heads, head_dim]  (strided views allowed)
    cu_seqlens_q    int32 [batch + 1]: query tokens of sequence b are q[cu[b]:cu[b+1]]
    seq_lens        int32 [batch]: total KV length of sequence b, its new tokens included
                    (they must already be in the cache, see ``write_kv``)
    block_tables    int32 [batch, max_blocks_per_seq]; entries past seq_len are never read

Query i of sequence b sits at position ``seq_lens[b] - q_len_b + i`` and attends to cache
positions ``0..`` that position. So one kernel serves fresh prompts (q_len == seq_len) and
prompts continuing on cached context (a re-prefill after preemption, a later prompt chunk).
No GQA (num_kv_heads == num_heads).

Supported: fp16, bf16, fp32 (fp32 uses IEEE dots, not TF32, and small tiles); head_dim 64,
80 (padded to 128 with masks), 128 and any other head_dim <= 256; any block size (8, 16, 32
tested).
Accumulation in fp32 with an online softmax in base 2.
Grid: (num_heads, batch, cdiv(max_q_len, BLOCK_M)), the last query blocks first.
One compiled variant per dtype, head_dim and block size: nothing that changes from step to
step (batch, lengths, the block table's width) is specialised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dsbox.kernels._common import (
    check_cache,
    check_dtype,
    launchable,
    log2_scale,
    next_power_of_2,
)

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the torch reference works without triton
    triton = None

__all__ = ["prefill_attention", "prefill_attention_ref"]


if triton is not None:

    @triton.jit
    def _attend_block(
        q,
        acc,
        m_i,
        l_i,
        start_n,
        kv_end,
        q_pos,
        block_table_ptr,
        k_head_ptr,
        v_head_ptr,
        stride_kb,
        stride_ks,
        stride_vb,
        stride_vs,
        scale_log2,
        offs_d,
        d_mask,
        PAGE_SIZE: tl.constexpr,
        BLOCK_N: tl.constexpr,
        CAUSAL_MASK: tl.constexpr,
        FP32_DOT: tl.constexpr,
    ):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        if CAUSAL_MASK:
            n_mask = offs_n < kv_end
            page = tl.load(block_table_ptr + offs_n // PAGE_SIZE, mask=n_mask, other=0)
            kv_mask = n_mask[:, None] & d_mask[None, :]
        else:
            page = tl.load(block_table_ptr + offs_n // PAGE_SIZE)
            kv_mask = d_mask[None, :]
        page = page.to(tl.int64)
        slot_in_page = offs_n % PAGE_SIZE
        k_off = page * stride_kb + slot_in_page * stride_ks
        v_off = page * stride_vb + slot_in_page * stride_vs
        k = tl.load(k_head_ptr + k_off[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
        if FP32_DOT == "":
            qk = tl.dot(q, tl.trans(k))
        else:
            qk = tl.dot(q, tl.trans(k), input_precision=FP32_DOT)
        qk = qk * scale_log2
        if CAUSAL_MASK:
            visible = (offs_n[None, :] <= q_pos[:, None]) & n_mask[None, :]
            qk = tl.where(visible, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_head_ptr + v_off[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
        acc = acc * alpha[:, None]
        if FP32_DOT == "":
            acc += tl.dot(p.to(v.dtype), v)
        else:
            acc += tl.dot(p.to(v.dtype), v, input_precision=FP32_DOT)
        return acc, m_new, l_i

    # the block table's row stride changes with the batch's longest sequence: not specialised
    @triton.jit(do_not_specialize=["stride_bt"])
    def _prefill_attention_kernel(
        q_ptr,
        k_cache_ptr,
        v_cache_ptr,
        out_ptr,
        cu_seqlens_q_ptr,
        seq_lens_ptr,
        block_tables_ptr,
        scale_log2,
        stride_qt,
        stride_qh,
        stride_ot,
        stride_oh,
        stride_kb,
        stride_ks,
        stride_kh,
        stride_vb,
        stride_vs,
        stride_vh,
        stride_bt,
        HEAD_DIM: tl.constexpr,
        PAGE_SIZE: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr,
        FP32_DOT: tl.constexpr,
    ):
        head = tl.program_id(0)
        seq = tl.program_id(1)
        # Last query blocks first: they see the most keys (longest-job-first balances the tail).
        m_block = tl.num_programs(2) - 1 - tl.program_id(2)

        q_start = tl.load(cu_seqlens_q_ptr + seq)
        q_len = tl.load(cu_seqlens_q_ptr + seq + 1) - q_start
        ctx_start = tl.load(seq_lens_ptr + seq) - q_len  # position of query 0

        first_m = m_block * BLOCK_M
        active = first_m < q_len
        offs_m = first_m + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        m_mask = offs_m < q_len
        d_mask = offs_d < HEAD_DIM
        q_pos = ctx_start + offs_m

        q_rows = (q_start + offs_m).to(tl.int64)
        q = tl.load(
            q_ptr + q_rows[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
            mask=m_mask[:, None] & d_mask[None, :],
            other=0.0,
        )

        # Keys before this block's first query are visible to every row: no causal mask.
        full_end = tl.where(active, ((ctx_start + first_m) // BLOCK_N) * BLOCK_N, 0)
        # Keys up to this block's last valid query position.
        kv_end = tl.where(active, ctx_start + tl.minimum(first_m + BLOCK_M, q_len), 0)

        block_table_ptr = block_tables_ptr + seq.to(tl.int64) * stride_bt
        k_head_ptr = k_cache_ptr + head * stride_kh
        v_head_ptr = v_cache_ptr + head * stride_vh

        # -1e30, not -inf: a row with every key masked in a block then gets alpha == 1, p == 0.
        m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

        for start_n in range(0, full_end, BLOCK_N):
            acc, m_i, l_i = _attend_block(
                q, acc, m_i, l_i, start_n, kv_end, q_pos, block_table_ptr,
                k_head_ptr, v_head_ptr, stride_kb, stride_ks, stride_vb, stride_vs,
                scale_log2, offs_d, d_mask, PAGE_SIZE, BLOCK_N, False, FP32_DOT,
            )  # fmt: skip
        for start_n in range(full_end, kv_end, BLOCK_N):
            acc, m_i, l_i = _attend_block(
                q, acc, m_i, l_i, start_n, kv_end, q_pos, block_table_ptr,
                k_head_ptr, v_head_ptr, stride_kb, stride_ks, stride_vb, stride_vs,
                scale_log2, offs_d, d_mask, PAGE_SIZE, BLOCK_N, True, FP32_DOT,
            )  # fmt: skip

        l_i = tl.where(l_i == 0.0, 1.0, l_i)
        o = acc / l_i[:, None]
        tl.store(
            out_ptr + q_rows[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
            o.to(out_ptr.dtype.element_ty),
            mask=m_mask[:, None] & d_mask[None, :],
        )


def _check(q, k_cache, v_cache, cu_seqlens_q, seq_lens, block_tables, out) -> None:
    for name, t in (("q", q), ("out", out)):
        if t.dim() != 3 or t.stride(2) != 1:
            raise ValueError(f"{name} must be [total_q_tokens, num_heads, head_dim], last dim "
                             "contiguous")
        check_dtype(name, t)
    check_cache("k_cache", k_cache)
    check_cache("v_cache", v_cache)
    if q.shape != out.shape:
        raise ValueError(f"out shape {tuple(out.shape)} != q shape {tuple(q.shape)}")
    if k_cache.shape != v_cache.shape or q.shape[1:] != k_cache.shape[2:]:
        raise ValueError("q, k_cache and v_cache disagree on num_heads/head_dim")
    batch = seq_lens.shape[0]
    if cu_seqlens_q.shape != (batch + 1,):
        raise ValueError("cu_seqlens_q must be [batch + 1]")
    if block_tables.dim() != 2 or block_tables.shape[0] != batch:
        raise ValueError("block_tables must be [batch, max_blocks_per_seq]")
    for name, t in (("cu_seqlens_q", cu_seqlens_q), ("seq_lens", seq_lens),
                    ("block_tables", block_tables)):
        if t.dtype != torch.int32:
            raise ValueError(f"{name} must be int32")


def _config(dtype: torch.dtype, block_d: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) by heuristics (autotune needs a GPU).

    Chosen for sm_90 without register spills (ptxas -v on the compiled kernels): fp32 uses
    IEEE FMA dots, which hold whole tiles in registers, hence its small tiles.
    """
    if dtype == torch.float32:
        return 32, 32, 8, 1
    if block_d <= 128:
        return 128, 64, 8, 3
    return 64, 32, 8, 2


def _launch_prefill(q, k_cache, v_cache, cu_seqlens_q, seq_lens, block_tables, scale, out,
                    max_q_len) -> None:
    total_q, num_heads, head_dim = q.shape
    batch = seq_lens.shape[0]
    if total_q == 0 or batch == 0:
        return
    if max_q_len is None:
        max_q_len = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max().item())
    if max_q_len <= 0:
        return
    block_d = max(16, next_power_of_2(head_dim))
    block_m, block_n, num_warps, num_stages = _config(q.dtype, block_d)
    if q.device.type != "cuda":  # interpreter: smaller tiles for short prompts
        block_m = min(block_m, max(16, next_power_of_2(max_q_len)))
    grid = (num_heads, batch, triton.cdiv(max_q_len, block_m))
    kernel = launchable(_prefill_attention_kernel, q.device)
    kernel[grid](
        q,
        k_cache,
        v_cache,
        out,
        cu_seqlens_q,
        seq_lens,
        block_tables,
        log2_scale(scale),
        q.stride(0),
        q.stride(1),
        out.stride(0),
        out.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        v_cache.stride(0),
        v_cache.stride(1),
        v_cache.stride(2),
        block_tables.stride(0),
        HEAD_DIM=head_dim,
        PAGE_SIZE=k_cache.shape[1],
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        FP32_DOT="ieee" if q.dtype == torch.float32 else "",
        num_warps=num_warps,
        num_stages=num_stages,
    )


def prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    seq_lens: torch.Tensor,
    block_tables: torch.Tensor,
    scale: float,
    out: torch.Tensor,
    max_q_len: int | None = None,
) -> torch.Tensor:
    """Causal attention of new query tokens over the paged cache; writes and returns ``out``.

    ``max_q_len`` (the longest q_len in the batch) sizes the grid; pass it to avoid a
    device-to-host sync. It must be >= the true maximum.
    """
    _check(q, k_cache, v_cache, cu_seqlens_q, seq_lens, block_tables, out)
    if triton is None:
        raise RuntimeError("triton is not installed; use prefill_attention_ref")
    _launch_prefill(q, k_cache, v_cache, cu_seqlens_q, seq_lens, block_tables, scale, out,
                    max_q_len)
    return out


def gather_kv(
    cache: torch.Tensor, block_table: torch.Tensor, length: int
) -> torch.Tensor:
    """Positions ``0..length-1`` of one sequence from a paged cache: [length, heads, dim]."""
    block_size = cache.shape[1]
    num_blocks = -(-length // block_size)
    blocks = block_table[:num_blocks].to(torch.int64)
    return cache[blocks].flatten(0, 1)[:length]


def prefill_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    seq_lens: torch.Tensor,
    block_tables: torch.Tensor,
    scale: float,
    out: torch.Tensor,
    max_q_len: int | None = None,
) -> torch.Tensor:
    """Torch reference of :func:`prefill_attention` (the engine's CPU path).

    One loop iteration per sequence: gather its K/V, then SDPA in fp32 with a causal mask
    offset by the cached context. ``max_q_len`` is accepted and ignored.
    """
    _check(q, k_cache, v_cache, cu_seqlens_q, seq_lens, block_tables, out)
    cu = cu_seqlens_q.tolist()
    lens = seq_lens.tolist()
    for b, kv_len in enumerate(lens):
        start, end = cu[b], cu[b + 1]
        q_len = end - start
        if q_len == 0:
            continue
        if kv_len < q_len:
            raise ValueError(f"sequence {b}: seq_len {kv_len} < q_len {q_len}")
        k = gather_kv(k_cache, block_tables[b], kv_len).float().transpose(0, 1)
        v = gather_kv(v_cache, block_tables[b], kv_len).float().transpose(0, 1)
        qb = q[start:end].float().transpose(0, 1)  # [heads, q_len, dim]
        if q_len == kv_len:  # fresh prompt: plain causal attention
            o = F.scaled_dot_product_attention(qb, k, v, is_causal=True, scale=scale)
        else:  # continuing on cached context: the causal mask is offset
            q_pos = torch.arange(kv_len - q_len, kv_len, device=q.device)
            mask = torch.arange(kv_len, device=q.device)[None, :] <= q_pos[:, None]
            o = F.scaled_dot_product_attention(qb, k, v, attn_mask=mask, scale=scale)
        out[start:end] = o.transpose(0, 1).to(out.dtype)
    return out
