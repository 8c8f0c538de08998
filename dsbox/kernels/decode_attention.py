"""Paged decode attention, split-KV (flash-decoding) with a merge stage.

Shapes:
    q, out          [batch, num_heads, head_dim]: one new token per sequence (views allowed,
                    last dim contiguous)
    k_cache/v_cache [num_blocks, block_size, num_heads, head_dim]  (strided views allowed)
    block_tables    int32 [batch, max_blocks_per_seq]; entries past seq_len are never read
    seq_lens        int32 [batch]: the token attends to cache positions 0..seq_lens[b]-1
                    (its own K/V included, already written with ``write_kv``)
    workspace       fp32 [max_batch, num_heads, max_splits, round_up(head_dim + 1, 16)]
                    from :func:`decode_workspace`; optional.

Stage 1, grid (batch, num_heads, num_splits): each program attends to one contiguous split
of the sequence (the split length adapts to seq_len; it is a multiple of BLOCK_N) and writes
its normalised partial output and log2-sum-exp to the workspace. Stage 2, grid
(batch, num_heads): merges the splits. With one split, stage 1 writes ``out`` directly.

The number of splits depends only on static shapes (batch, heads, block table width) and
the device, never on tensor values, and nothing is allocated when a workspace is passed:
the call can be captured in a CUDA graph.

Compiled variants: the split count is a run-time argument (only "one split or more" is a
compile-time flag), the merge stage's padding comes from the workspace (fixed), and Triton
does not specialise the arguments that change from step to step (the split count, the block
table's row stride): per dtype, head_dim and block size there are two split variants and one
merge variant, whatever the batch and table width (``tests/kernels/test_launch_keys.py``).

Supported: fp16, bf16, fp32; head_dim 64, 80 (padded to 128 with masks), 128 and any other
head_dim <= 256; any block size (8, 16, 32 tested). Accumulation in fp32. No GQA.
A sequence with seq_len 0 gets zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dsbox.kernels._common import (
    cdiv,
    check_cache,
    check_dtype,
    launchable,
    log2_scale,
    next_power_of_2,
    num_sms,
)

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the torch reference works without triton
    triton = None

__all__ = [
    "DEFAULT_MAX_SPLITS",
    "decode_attention",
    "decode_attention_ref",
    "decode_num_splits",
    "decode_workspace",
]

DEFAULT_MAX_SPLITS = 16
_MIN_SPLIT_TOKENS = 128  # do not split a sequence into pieces shorter than this
_PROGRAMS_PER_SM = 64  # enough waves that the last, partial one costs little


if triton is not None:

    @triton.jit(do_not_specialize=["num_splits", "stride_bt"])
    def _decode_split_kernel(
        q_ptr,
        k_cache_ptr,
        v_cache_ptr,
        block_tables_ptr,
        seq_lens_ptr,
        out_ptr,
        ws_ptr,
        scale_log2,
        num_splits,
        stride_qb,
        stride_qh,
        stride_ob,
        stride_oh,
        stride_kb,
        stride_ks,
        stride_kh,
        stride_vb,
        stride_vs,
        stride_vh,
        stride_bt,
        stride_wb,
        stride_wh,
        stride_ws,
        HEAD_DIM: tl.constexpr,
        ONE_SPLIT: tl.constexpr,
        PAGE_SIZE: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        seq = tl.program_id(0).to(tl.int64)
        head = tl.program_id(1)
        split = tl.program_id(2)

        seq_len = tl.load(seq_lens_ptr + seq)
        split_len = tl.cdiv(tl.cdiv(seq_len, num_splits), BLOCK_N) * BLOCK_N
        start = split * split_len
        end = tl.minimum(start + split_len, seq_len)

        offs_d = tl.arange(0, BLOCK_D)
        d_mask = offs_d < HEAD_DIM
        q = tl.load(q_ptr + seq * stride_qb + head * stride_qh + offs_d, mask=d_mask, other=0.0)
        q = q.to(tl.float32) * scale_log2

        block_table_ptr = block_tables_ptr + seq * stride_bt
        k_head_ptr = k_cache_ptr + head * stride_kh
        v_head_ptr = v_cache_ptr + head * stride_vh

        m_i = -1.0e30  # finite: an all-masked tile then gives alpha == 1, p == 0
        l_i = 0.0
        acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        for start_n in range(start, end, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            n_mask = offs_n < end
            page = tl.load(block_table_ptr + offs_n // PAGE_SIZE, mask=n_mask, other=0)
            page = page.to(tl.int64)
            slot_in_page = offs_n % PAGE_SIZE
            kv_mask = n_mask[:, None] & d_mask[None, :]
            k_off = page * stride_kb + slot_in_page * stride_ks
            v_off = page * stride_vb + slot_in_page * stride_vs
            k = tl.load(k_head_ptr + k_off[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
            v = tl.load(v_head_ptr + v_off[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
            qk = tl.sum(q[None, :] * k.to(tl.float32), 1)
            qk = tl.where(n_mask, qk, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 0))
            alpha = tl.math.exp2(m_i - m_new)
            p = tl.math.exp2(qk - m_new)
            l_i = l_i * alpha + tl.sum(p, 0)
            acc = acc * alpha + tl.sum(p[:, None] * v.to(tl.float32), 0)
            m_i = m_new

        empty = l_i == 0.0
        o = acc / tl.where(empty, 1.0, l_i)
        if ONE_SPLIT:
            tl.store(
                out_ptr + seq * stride_ob + head * stride_oh + offs_d,
                o.to(out_ptr.dtype.element_ty),
                mask=d_mask,
            )
        else:
            ws = ws_ptr + seq * stride_wb + head * stride_wh + split * stride_ws
            tl.store(ws + offs_d, o, mask=d_mask)
            lse = tl.where(empty, float("-inf"), m_i + tl.math.log2(tl.where(empty, 1.0, l_i)))
            tl.store(ws + HEAD_DIM, lse)

    @triton.jit(do_not_specialize=["num_splits"])
    def _decode_merge_kernel(
        ws_ptr,
        out_ptr,
        num_splits,
        stride_ob,
        stride_oh,
        stride_wb,
        stride_wh,
        stride_ws,
        HEAD_DIM: tl.constexpr,
        SPLITS_PAD: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        seq = tl.program_id(0).to(tl.int64)
        head = tl.program_id(1)
        offs_s = tl.arange(0, SPLITS_PAD)
        offs_d = tl.arange(0, BLOCK_D)
        s_mask = offs_s < num_splits
        d_mask = offs_d < HEAD_DIM
        ws = ws_ptr + seq * stride_wb + head * stride_wh + offs_s * stride_ws
        lse = tl.load(ws + HEAD_DIM, mask=s_mask, other=float("-inf"))
        m = tl.max(lse, 0)
        m = tl.where(m == float("-inf"), 0.0, m)
        w = tl.math.exp2(lse - m)
        parts = tl.load(ws[:, None] + offs_d[None, :], mask=s_mask[:, None] & d_mask[None, :],
                        other=0.0)
        num = tl.sum(w[:, None] * parts, 0)
        den = tl.sum(w, 0)
        o = num / tl.where(den == 0.0, 1.0, den)
        tl.store(out_ptr + seq * stride_ob + head * stride_oh + offs_d,
                 o.to(out_ptr.dtype.element_ty), mask=d_mask)


def _workspace_last_dim(head_dim: int) -> int:
    return cdiv(head_dim + 1, 16) * 16


def decode_workspace(
    max_batch: int,
    num_heads: int,
    head_dim: int,
    device: torch.device | str,
    max_splits: int = DEFAULT_MAX_SPLITS,
) -> torch.Tensor:
    """Scratch for :func:`decode_attention` at batch sizes up to ``max_batch``.

    Allocate once (before CUDA-graph capture) and pass it to every call.
    """
    if max_batch < 1 or num_heads < 1 or head_dim < 1 or max_splits < 1:
        raise ValueError("decode_workspace: sizes must be >= 1")
    return torch.empty(
        (max_batch, num_heads, max_splits, _workspace_last_dim(head_dim)),
        dtype=torch.float32,
        device=device,
    )


def decode_num_splits(
    batch: int,
    num_heads: int,
    max_context: int,
    device: torch.device | str,
    max_splits: int = DEFAULT_MAX_SPLITS,
) -> int:
    """How many KV splits :func:`decode_attention` uses (static shapes only).

    Enough programs for many waves on the device (about 64 per SM, so the last partial wave
    costs little: batch 64 x 40 heads on an H100 gets 4 splits), no split shorter than 128
    tokens of the block table's capacity ``max_context``, at most ``max_splits``.
    """
    device = torch.device(device)
    target_programs = _PROGRAMS_PER_SM * num_sms(device)
    want = cdiv(target_programs, max(1, batch * num_heads))
    by_len = max(1, cdiv(max_context, _MIN_SPLIT_TOKENS))
    return max(1, min(want, by_len, max_splits))


def _check(q, k_cache, v_cache, block_tables, seq_lens, out) -> None:
    for name, t in (("q", q), ("out", out)):
        if t.dim() != 3 or t.stride(2) != 1:
            raise ValueError(f"{name} must be [batch, num_heads, head_dim], last dim contiguous")
        check_dtype(name, t)
    check_cache("k_cache", k_cache)
    check_cache("v_cache", v_cache)
    if q.shape != out.shape:
        raise ValueError(f"out shape {tuple(out.shape)} != q shape {tuple(q.shape)}")
    if k_cache.shape != v_cache.shape or q.shape[1:] != k_cache.shape[2:]:
        raise ValueError("q, k_cache and v_cache disagree on num_heads/head_dim")
    batch = q.shape[0]
    if seq_lens.shape != (batch,):
        raise ValueError("seq_lens must be [batch]")
    if block_tables.dim() != 2 or block_tables.shape[0] != batch:
        raise ValueError("block_tables must be [batch, max_blocks_per_seq]")
    if seq_lens.dtype != torch.int32 or block_tables.dtype != torch.int32:
        raise ValueError("seq_lens and block_tables must be int32")


def _launch_decode(q, k_cache, v_cache, block_tables, seq_lens, scale, out, workspace,
                   num_splits) -> None:
    batch, num_heads, head_dim = q.shape
    if batch == 0:
        return
    block_size = k_cache.shape[1]
    max_splits = workspace.shape[2] if workspace is not None else DEFAULT_MAX_SPLITS
    if num_splits is None:
        num_splits = decode_num_splits(batch, num_heads, block_tables.shape[1] * block_size,
                                       q.device, max_splits)
    if num_splits < 1:
        raise ValueError("num_splits must be >= 1")
    if num_splits > 1:
        if workspace is None:  # the default size: its strides, and so the variant, are fixed
            workspace = decode_workspace(batch, num_heads, head_dim, q.device,
                                         max(DEFAULT_MAX_SPLITS, num_splits))
        elif (workspace.dtype != torch.float32 or workspace.dim() != 4
              or workspace.shape[0] < batch or workspace.shape[1] != num_heads
              or workspace.shape[2] < num_splits or workspace.shape[3] < head_dim + 1
              or workspace.stride(3) != 1 or workspace.device != q.device):
            raise ValueError(
                f"workspace {tuple(workspace.shape)} {workspace.dtype} does not fit batch "
                f"{batch}, {num_heads} heads, head_dim {head_dim}, {num_splits} splits "
                "(use decode_workspace)"
            )
        ws, ws_strides = workspace, workspace.stride()[:3]
    else:
        ws, ws_strides = out, (0, 0, 0)  # unused

    block_d = max(16, next_power_of_2(head_dim))
    # Vectorised 16-byte loads, no spills on sm_90 (ptxas -v): 80 registers at 64 x 128 fp16.
    block_n = 32 if q.dtype == torch.float32 or block_d > 128 else 64
    split_kernel = launchable(_decode_split_kernel, q.device)
    split_kernel[(batch, num_heads, num_splits)](
        q,
        k_cache,
        v_cache,
        block_tables,
        seq_lens,
        out,
        ws,
        log2_scale(scale),
        num_splits,
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
        *ws_strides,
        HEAD_DIM=head_dim,
        ONE_SPLIT=num_splits == 1,
        PAGE_SIZE=block_size,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        num_warps=4,
        num_stages=2,
    )
    if num_splits > 1:
        merge_kernel = launchable(_decode_merge_kernel, q.device)
        merge_kernel[(batch, num_heads)](
            ws,
            out,
            num_splits,
            out.stride(0),
            out.stride(1),
            *ws_strides,
            HEAD_DIM=head_dim,
            SPLITS_PAD=max(2, next_power_of_2(ws.shape[2])),
            BLOCK_D=block_d,
            num_warps=4,
        )


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    out: torch.Tensor,
    workspace: torch.Tensor | None = None,
    *,
    num_splits: int | None = None,
) -> torch.Tensor:
    """Attention of one new token per sequence over the paged cache; writes and returns
    ``out``. ``num_splits`` overrides the heuristic (:func:`decode_num_splits`)."""
    _check(q, k_cache, v_cache, block_tables, seq_lens, out)
    if triton is None:
        raise RuntimeError("triton is not installed; use decode_attention_ref")
    _launch_decode(q, k_cache, v_cache, block_tables, seq_lens, scale, out, workspace,
                   num_splits)
    return out


def decode_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    out: torch.Tensor,
    workspace: torch.Tensor | None = None,
    *,
    num_splits: int | None = None,
) -> torch.Tensor:
    """Torch reference of :func:`decode_attention` (the engine's CPU path).

    One SDPA per sequence over exactly its own blocks, in fp32: no padding to the batch's
    longest context is gathered or computed, and positions past a sequence's length (stale
    slots of its last block, padding entries of the block table) are sliced off before any
    arithmetic. A sequence of length 0 gives zeros. ``workspace`` and ``num_splits`` are
    accepted and ignored.
    """
    _check(q, k_cache, v_cache, block_tables, seq_lens, out)
    batch = q.shape[0]
    if batch == 0:
        return out
    block_size = k_cache.shape[1]
    lens = seq_lens.tolist()
    if cdiv(max(lens), block_size) > block_tables.shape[1]:
        raise ValueError(f"seq_len {max(lens)} exceeds the block table's capacity")
    table = block_tables.to(torch.int64)
    for b, n in enumerate(lens):
        if n <= 0:
            out[b].zero_()
            continue
        blocks = table[b, :cdiv(n, block_size)]
        k = k_cache.index_select(0, blocks).flatten(0, 1)[:n].float()  # [n, heads, dim]
        v = v_cache.index_select(0, blocks).flatten(0, 1)[:n].float()
        o = F.scaled_dot_product_attention(q[b, :, None, :].float(), k.transpose(0, 1),
                                           v.transpose(0, 1), scale=scale)
        out[b].copy_(o[:, 0])
    return out
